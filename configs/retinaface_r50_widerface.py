# RetinaFace ResNet50 on WIDER FACE, the reference recipe: 840 px crops, total batch 24
# (6 per GPU x 4: tools/dist_train.sh configs/retinaface_r50_widerface.py 4), SGD 1e-3 for
# 100 epochs. The backbone starts from torchvision's ImageNet weights (torchvision://resnet50,
# downloaded when training starts); offline: --cfg-options model.backbone.init_cfg=None
# or model.backbone.init_cfg.checkpoint=LOCAL_FILE (docs/training.md).
_base_ = [
    './_base_/models/retinaface_r50.py',
    './_base_/datasets/widerface.py',
    './_base_/schedules/sgd_100e.py',
    './_base_/default_runtime.py',
]
img_dim = 840  # the crop size: the base train pipeline with this resize
train_pipeline = [dict(step, img_dim=img_dim) if step.type == 'RandomInterpResize' else step
                  for step in _base_.train_pipeline]
train_dataloader = dict(batch_size=6, dataset=dict(pipeline=train_pipeline))
