"""The neck as one config dict: same parameters as the FPN + SSH list, backbone swaps that
override only the channels, and the mmdet-FPN variant training on drawn faces."""
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData

from tests.conftest import ROOT

CONFIGS = ROOT / 'configs'
LEAKY = dict(type='LeakyReLU', negative_slope=0.1)
STEPS = 30  # SGD steps of the training check, on one fixed batch of drawn faces
DROP = 0.5  # each loss term: mean of the last 3 steps below this x the first 3 (~0.25 seen)


def test_neck_is_the_fpn_ssh_list_under_the_same_names():
    """Parameter names ``0.*`` / ``1.*`` as the list neck had: converted checkpoints load."""
    neck = MODELS.build(dict(type='RetinaFaceNeck', in_channels=[16, 32, 64], out_channels=32,
                             fpn=dict(type='RetinaFaceFPN', act_cfg=LEAKY),
                             ssh=dict(type='RetinaFaceSSH', act_cfg=LEAKY)))
    as_list = MODELS.build([
        dict(type='RetinaFaceFPN', in_channels=[16, 32, 64], out_channels=32, act_cfg=LEAKY),
        dict(type='RetinaFaceSSH', num_levels=3, in_channels=32, out_channels=32,
             act_cfg=LEAKY),
    ])
    torch.manual_seed(0)
    for p in as_list.parameters():
        p.data.normal_()
    assert list(neck.state_dict()) == list(as_list.state_dict())
    neck.load_state_dict(as_list.state_dict(), strict=True)
    feats = [torch.randn(2, c, s, s) for c, s in ((16, 20), (32, 10), (64, 5))]
    with torch.no_grad():
        for a, b in zip(neck.eval()(feats), as_list.eval()(feats)):
            assert torch.equal(a, b)


def test_backbone_swap_overrides_only_the_channels():
    cfg = Config.fromfile(str(CONFIGS / 'retinaface_r18_widerface.py'))
    neck = cfg.model.neck
    assert neck.in_channels == [128, 256, 512] and neck.out_channels == 256
    assert neck.fpn == dict(type='RetinaFaceFPN', act_cfg=dict(type='ReLU'))  # from r50
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert [m.conv.in_channels for m in model.neck[0].lateral_convs] == [128, 256, 512]
    feats = model.extract_feat(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 8, 12), (256, 4, 6), (256, 2, 3)]


def test_neck_channels_are_set_in_one_place():
    with pytest.raises(ValueError, match=r"neck.fpn sets \['in_channels'\]"):
        MODELS.build(dict(type='RetinaFaceNeck', in_channels=[16, 32, 64], out_channels=32,
                          fpn=dict(type='RetinaFaceFPN', in_channels=[16, 32, 64])))


def test_imagenet_init_of_the_resnet_configs():
    """ResNet recipes start from torchvision's ImageNet weights (mmengine downloads them when
    training starts; tests and offline users set ``model.backbone.init_cfg=None``)."""
    for name, depth in (('retinaface_r50_widerface.py', 50), ('retinaface_r18_widerface.py', 18)):
        backbone = Config.fromfile(str(CONFIGS / name)).model.backbone
        assert backbone.depth == depth
        assert backbone.init_cfg == dict(type='Pretrained',
                                         checkpoint=f'torchvision://resnet{depth}')


def synthetic_batch(num_images: int, size: int, seed: int = 0) -> dict:
    """Drawn faces (``mmretinaface.datasets.synthetic``) as a packed training batch."""
    from mmretinaface.datasets.synthetic import render_synthetic_faces
    inputs, samples = [], []
    for i in range(num_images):
        face = render_synthetic_faces(np.random.default_rng([seed, i]), size=size,
                                      face_size=(16.0, 96.0))
        inputs.append(torch.from_numpy(face.img).permute(2, 0, 1).contiguous())
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1.0, 1.0)))
        num = len(face.bboxes)
        sample.gt_instances = InstanceData(
            bboxes=torch.from_numpy(face.bboxes), labels=torch.zeros(num, dtype=torch.long),
            keypoints=torch.from_numpy(face.keypoints), keypoints_visible=torch.ones(num, 5))
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                                labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_mmdet_fpn_config_trains_on_drawn_faces():
    """mmdet's FPN (BN + LeakyReLU) under the SSH modules: the config builds that stack and a
    few SGD steps from scratch on drawn faces bring every loss term down."""
    from mmdet.models.necks import FPN
    cfg = Config.fromfile(str(CONFIGS / 'retinaface_mobilenet0.25_mmdetfpn_widerface.py'))
    cfg.model.backbone.init_cfg = None  # from scratch (the recipe reads the ImageNet backbone)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    fpn = model.neck[0]
    assert type(fpn) is FPN and len(fpn.fpn_convs) == 3
    for conv in (*fpn.lateral_convs, *fpn.fpn_convs):
        assert conv.with_norm and conv.norm_cfg['type'] == 'BN'
        assert conv.act_cfg == LEAKY
    data = synthetic_batch(8, 160)
    assert sum(len(s.gt_instances) for s in data['data_samples']) >= 16
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                         weight_decay=5e-4))
    model.train()
    history = []
    for _ in range(STEPS):
        log = model.train_step(data, optim)
        history.append({k: float(v.detach()) for k, v in log.items()})
    for row in history:
        assert all(np.isfinite(v) for v in row.values()), row
    for key in ('loss', 'loss_cls', 'loss_bbox', 'loss_kpt'):
        first = np.mean([row[key] for row in history[:3]])
        last = np.mean([row[key] for row in history[-3:]])
        assert last < DROP * first, (key, first, last)
