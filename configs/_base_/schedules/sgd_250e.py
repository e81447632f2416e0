# The reference MobileNet0.25 schedule: SGD lr 1e-3, x0.1 at epochs 190 and 220, no warmup.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=250, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=250, milestones=[190, 220], gamma=0.1)
]
# The reference trains with a total batch of 32; `--auto-scale-lr` rescales lr to yours.
auto_scale_lr = dict(enable=False, base_batch_size=32)
