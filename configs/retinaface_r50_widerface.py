# RetinaFace ResNet50 on WIDER FACE, the reference recipe: 840 px crops, total batch 24
# (6 per GPU x 4: tools/dist_train.sh configs/retinaface_r50_widerface.py 4), SGD 1e-3 for
# 100 epochs. ImageNet init: set model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint='path/to/resnet50.pth') (nothing is downloaded).
_base_ = [
    './_base_/models/retinaface_r50.py',
    './_base_/datasets/widerface.py',
    './_base_/schedules/sgd_100e.py',
    './_base_/default_runtime.py',
]
img_dim = 840
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadFaceAnnotations'),
    dict(type='RandomSquareCrop'),
    dict(type='PhotoMetricDistortion'),
    dict(type='PadToSquareIfCropFailed'),
    dict(type='RandomFlipWithLandmarks', prob=0.5),
    dict(type='RandomInterpResize', img_dim=img_dim),
    dict(type='PackFaceInputs'),
]
train_dataloader = dict(batch_size=6, dataset=dict(pipeline=train_pipeline))
