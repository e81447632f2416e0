# Another mmdet backbone by inheritance: ResNet-18 (layer2/3/4: 128/256/512 channels)
# with the ResNet50 recipe. Any mmdet backbone works the same way: override
# model.backbone and the neck's in_channels.
_base_ = './retinaface_r50_widerface.py'
model = dict(
    backbone=dict(
        depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[128, 256, 512]))
