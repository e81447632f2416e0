# RetinaFace MobileNet0.25 on WIDER FACE, the reference recipe: 640 px crops, batch 32,
# SGD 1e-3 for 250 epochs, from the reference's ImageNet backbone. Nothing is downloaded:
# convert the reference's file once (docs/training.md, "ImageNet initialisation"):
#   python tools/convert_weights.py mobilenetV1X0.25_pretrain.tar \
#       --out checkpoints/mobilenet0.25_imagenet.pth
# tools/train.py stops with this hint when the file is missing. Training from scratch is a
# choice you make: --cfg-options model.backbone.init_cfg=None
_base_ = [
    './_base_/models/retinaface_mobilenet0.25.py',
    './_base_/datasets/widerface.py',
    './_base_/schedules/sgd_250e.py',
    './_base_/default_runtime.py',
]
