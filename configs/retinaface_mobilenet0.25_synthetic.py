# RetinaFace MobileNet0.25 trained from scratch on drawn faces: a quick, self-contained
# check that the whole training path works (data, crop/flip with landmark swap, loss,
# schedule, evaluation). A few minutes on a 2-core CPU; see docs/training.md.
#
#   python tools/make_synthetic_widerface.py --out data/synthetic_widerface --num-images 500
#   python tools/train.py configs/retinaface_mobilenet0.25_synthetic.py
#
# Held-out AP@0.5 (WiderFaceMetric's fallback on the val split's own gt) reaches ~0.95+
# in 250 iterations, with landmark pair direction ~1 (a broken flip swap gives ~0).
_base_ = './retinaface_mobilenet0.25_widerface.py'

data_root = 'data/synthetic_widerface/'
img_dim = 320  # the crop size: the base train pipeline with this resize
max_iters = 250
warmup_iters = 40

model = dict(backbone=dict(init_cfg=None))  # from scratch, on purpose: drawn faces are easy

train_pipeline = [dict(step, img_dim=img_dim) if step.type == 'RandomInterpResize' else step
                  for step in _base_.train_pipeline]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
# every synthetic image has the same size, so val batches need no per-image padding
val_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
# no official .mat ground truth: AP@0.5 on the val split's labels (+ landmark NME and
# pair direction, since the val labels carry landmarks)
val_evaluator = dict(type='WiderFaceMetric', gt_dir=None)
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters, end=max_iters,
         T_max=max_iters - warmup_iters, eta_min=5e-4),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=25, by_epoch=False)
randomness = dict(seed=0)
