# RetinaFace MobileNet0.25 on WIDER FACE, the reference recipe: 640 px crops, batch 32,
# SGD 1e-3 for 250 epochs. ImageNet init: set model.backbone.init_cfg to a converted
# mobilenetV1X0.25_pretrain checkpoint (nothing is downloaded).
_base_ = [
    './_base_/models/retinaface_mobilenet0.25.py',
    './_base_/datasets/widerface.py',
    './_base_/schedules/sgd_250e.py',
    './_base_/default_runtime.py',
]
