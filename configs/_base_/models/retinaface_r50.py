# RetinaFace with a ResNet50 body tapped at layer2/3/4 (256-channel FPN/SSH, ReLU).
_base_ = './retinaface_mobilenet0.25.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,  # the reference trains BN statistics
        style='pytorch',
        # ImageNet weights, as the reference and every mmdet ResNet config (downloaded by
        # mmengine when training starts). Offline or in tests: model.backbone.init_cfg=None,
        # or checkpoint='path/to/resnet50.pth' (torchvision key names).
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    # ReLU replaces the base's LeakyReLU (_delete_: no negative_slope merged into it)
    neck=dict(
        in_channels=[512, 1024, 2048],
        out_channels=256,
        fpn=dict(act_cfg=dict(_delete_=True, type='ReLU')),
        ssh=dict(act_cfg=dict(_delete_=True, type='ReLU'))),
    bbox_head=dict(in_channels=256))
