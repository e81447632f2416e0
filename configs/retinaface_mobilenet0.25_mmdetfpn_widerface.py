# RetinaFace MobileNet0.25 with mmdet's own FPN (lateral and output convs with BN and
# LeakyReLU 0.1) under the SSH modules, for training new models; the WIDER FACE recipe of
# retinaface_mobilenet0.25_widerface.py otherwise.
#
# Pick the reference FPN (RetinaFaceFPN, the default configs) to load the published or
# converted weights: its top-down path is sequential (each merge is convolved before the
# next level is added) and it has no output conv on the top level. mmdet's FPN adds the
# upsampled laterals first and convolves every level after, so those weights do not fit.
_base_ = './retinaface_mobilenet0.25_widerface.py'
model = dict(
    neck=dict(
        fpn=dict(
            _delete_=True,
            type='FPN',
            num_outs=3,
            norm_cfg=dict(type='BN'),
            act_cfg=dict(type='LeakyReLU', negative_slope=0.1))))
