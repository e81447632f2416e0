# RetinaFace with the reference MobileNet0.25 body (64-channel FPN/SSH, LeakyReLU 0.1).
num_keypoints = 5
variances = (0.1, 0.2)  # SSD centre / size variances, shared by the box and landmark coders
leaky_relu = dict(type='LeakyReLU', negative_slope=0.1)
model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[104.0, 117.0, 123.0],  # BGR, as the reference
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False,
        pad_size_divisor=1),
    backbone=dict(
        type='MobileNetV1',
        widen_factor=0.25,
        out_indices=(0, 1, 2),
        act_cfg=leaky_relu,
        # The reference's ImageNet weights, converted once with tools/convert_weights.py
        # (docs/training.md, "ImageNet initialisation"); nothing is downloaded, and
        # tools/train.py stops with that hint when the file is missing.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mobilenet0.25_imagenet.pth')),
    # FPN then SSH per level; a backbone swap overrides in_channels only
    neck=dict(
        type='RetinaFaceNeck',
        in_channels=[64, 128, 256],
        out_channels=64,
        fpn=dict(type='RetinaFaceFPN', act_cfg=leaky_relu),  # the reference FPN
        ssh=dict(type='RetinaFaceSSH', act_cfg=leaky_relu)),
    bbox_head=dict(
        type='RetinaFaceHead',
        in_channels=64,
        num_classes=1,
        num_keypoints=num_keypoints,
        prior_generator=dict(
            type='RetinaFacePriorGenerator',
            min_sizes=[[16, 32], [64, 128], [256, 512]],
            steps=[8, 16, 32]),
        bbox_coder=dict(type='SSDBoxCoder', variances=variances),
        kpt_coder=dict(type='LandmarkCoder', variances=variances),
        loss_multibox=dict(type='MultiBoxLoss', neg_pos_ratio=7, loc_weight=2.0)),
    # The reference matching: IoU >= 0.35 positive; GTs whose best prior IoU < 0.2 ignored.
    train_cfg=dict(
        assigner=dict(type='RetinaFacePriorAssigner', pos_iou_thr=0.35, min_best_iou=0.2)),
    # The reference test settings (score 0.02, top_k 5000, NMS 0.4, keep_top_k 750).
    test_cfg=dict(
        score_thr=0.02, nms_pre=5000, nms=dict(type='nms', iou_threshold=0.4),
        max_per_img=750))
