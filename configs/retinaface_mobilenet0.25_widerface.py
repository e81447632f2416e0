# RetinaFace MobileNet0.25 on WIDER FACE, the reference recipe (640 px, batch 32, 250 epochs).
_base_ = [
    './_base_/models/retinaface_mobilenet0.25.py',
    './_base_/datasets/widerface.py',
    './_base_/default_runtime.py',
]
