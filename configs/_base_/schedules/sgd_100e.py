# The reference ResNet50 schedule: SGD lr 1e-3, x0.1 at epochs 70 and 90, no warmup.
_base_ = './sgd_250e.py'
train_cfg = dict(max_epochs=100, val_interval=5)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=100, milestones=[70, 90], gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=24)
