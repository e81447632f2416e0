# Another mmdet backbone by inheritance: ResNet-18 (layer2/3/4: 128/256/512 channels)
# with the ResNet50 recipe. Any mmdet backbone works the same way: override
# model.backbone and the FPN's in_channels.
_base_ = './retinaface_r50_widerface.py'
model = dict(
    backbone=dict(depth=18),
    neck=[
        dict(type='RetinaFaceFPN', in_channels=[128, 256, 512], out_channels=256,
             act_cfg=dict(type='ReLU')),
        dict(type='RetinaFaceSSH', num_levels=3, in_channels=256, out_channels=256,
             act_cfg=dict(type='ReLU')),
    ])
