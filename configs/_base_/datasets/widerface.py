# WIDER FACE with RetinaFace-style label files under data/widerface/ (see docs/data.md).
dataset_type = 'WiderFaceDataset'
data_root = 'data/widerface/'
img_dim = 640  # training crop size; the ResNet50 config overrides it (840)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadFaceAnnotations'),
    dict(type='FaceRandomSquareCrop'),
    dict(type='PhotoMetricDistortion'),
    dict(type='PadToSquareIfCropFailed'),
    dict(type='RandomFlipWithLandmarks', prob=0.5),
    dict(type='RandomInterpResize', img_dim=img_dim),
    dict(type='PackFaceInputs'),
]
# Original image size (the reference's WIDER FACE protocol); batch 1.
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
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
