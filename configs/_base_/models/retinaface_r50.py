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
        style='pytorch'),
    neck=[
        dict(type='RetinaFaceFPN', in_channels=[512, 1024, 2048], out_channels=256,
             act_cfg=dict(type='ReLU')),
        dict(type='RetinaFaceSSH', num_levels=3, in_channels=256, out_channels=256,
             act_cfg=dict(type='ReLU')),
    ],
    bbox_head=dict(in_channels=256))
