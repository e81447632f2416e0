# RetinaFace ResNet50 on WIDER FACE, the reference recipe (840 px, batch 24, 100 epochs).
_base_ = [
    './_base_/models/retinaface_r50.py',
    './_base_/datasets/widerface.py',
    './_base_/default_runtime.py',
]
