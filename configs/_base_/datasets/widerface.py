# WIDER FACE with RetinaFace-style label files under data/widerface/ (see docs/data.md).
dataset_type = 'WiderFaceDataset'
data_root = 'data/widerface/'
# Training crop size: RandomSquareCrop's square crops are resized to img_dim x img_dim.
# A child config changes it in one place by setting img_dim and deriving its pipeline
# from this one (see configs/retinaface_r50_widerface.py).
img_dim = 640
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadFaceAnnotations'),
    dict(type='RandomSquareCrop'),
    dict(type='PhotoMetricDistortion'),
    dict(type='PadToSquareIfCropFailed'),
    dict(type='MirrorWithLandmarks', prob=0.5),
    dict(type='RandomInterpResize', img_dim=img_dim),
    dict(type='PackFaceInputs'),
]
# Original image size (the reference's WIDER FACE protocol); batch 1. LimitSize
# downscales only photos whose longer side exceeds max_size (none in WIDER FACE;
# FaceInferencer's max_size= sets it). Annotations load after the resizes so the
# metric sees ground truth in original pixels, like the predictions (rescale=True).
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='ResizeWithLandmarks', scale_factor=1.0, keep_ratio=True),
    dict(type='LimitSize', max_size=4096),
    dict(type='LoadFaceAnnotations'),
    dict(type='PackFaceInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='train/label.txt',
        data_prefix=dict(img='train/images/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='val/label.txt',
        data_prefix=dict(img='val/images/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='WiderFaceMetric', gt_dir=data_root + 'ground_truth/')
test_evaluator = val_evaluator

# Test-time scale protocols (tools/test.py --scale-protocol NAME picks one):
# original size (default, above), fixed VGA (fit in 640x480), and the reference's
# single scale (shorter side 1600, longer side <= 2150).
test_scale_protocols = dict(
    original=dict(type='ResizeWithLandmarks', scale_factor=1.0, keep_ratio=True),
    vga=dict(type='ResizeWithLandmarks', scale=(640, 480), keep_ratio=True),
    reference=dict(type='ResizeWithLandmarks', scale=(2150, 1600), keep_ratio=True),
)

# Horizontal-flip test-time augmentation (tools/test.py --tta): landmarks are
# mirrored back and left/right swapped before the views are merged.
tta_model = dict(
    type='FaceTTAModel',  # flip_indices default: FACE_FLIP_INDICES (datasets/metainfo.py)
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.4), max_per_img=750))
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='ResizeWithLandmarks', scale_factor=1.0, keep_ratio=True)],
            [dict(type='LoadFaceAnnotations')],
            # the unflipped view first: its ground truth is the one evaluated
            [dict(type='MirrorWithLandmarks', prob=0.0),
             dict(type='MirrorWithLandmarks', prob=1.0)],
            [dict(type='PackFaceInputs',
                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                             'flip', 'flip_direction'))],
        ])
]
