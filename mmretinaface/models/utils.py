"""Model helpers: candidate selection, one-class NMS and its device placement (shared by
the head and test-time augmentation); the BatchNorm layers of a model."""
from typing import List, Optional, Tuple

import torch
from mmcv.ops import batched_nms, nms
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def nms_needs_cpu(device: torch.device) -> bool:
    """Whether NMS on tensors of ``device`` runs on the CPU instead.

    mmcv's ops are built for the CPU on every machine (``make setup``: no CUDA
    kernels, no CUDA toolkit needed), and NMS only sees the candidates left
    after the score threshold and ``nms_pre`` (a few hundred, at most
    thousands), so tensors on any other device go to the CPU for NMS and come
    back: the results are those of the CPU path.
    """
    return torch.device(device).type != 'cpu'


def select_candidates(scores: Tensor, score_thr: float,
                      topk: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Scores above ``score_thr``, highest first, at most ``topk``, and their indices.

    mmdet's ``filter_scores_and_topk`` for one class (``scores`` ``(P,)``):
    the same threshold, the same sort of the same candidates (so ties come
    out in the same order), without the label column and the per-field
    dict; the caller gathers only what it needs with the indices.
    """
    idx = torch.nonzero(scores > score_thr).view(-1)
    scores, order = scores[idx].sort(descending=True)
    if topk is not None and topk < order.numel():
        scores, order = scores[:topk], order[:topk]
    return scores, idx[order]


def single_class_nms(bboxes: Tensor, scores: Tensor, nms_cfg: dict,
                     max_num: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Indices kept by NMS (best first, at most ``max_num``) and their scores after NMS.

    mmcv's ``batched_nms`` with every box in one class (``nms_cfg``: the
    head's ``test_cfg.nms``, any mmcv NMS type): its class offsets are zero,
    so they are skipped (``class_agnostic``; the kept boxes are the same),
    and plain ``'nms'`` below its ``split_thr`` calls ``mmcv.ops.nms``
    directly, the one call ``batched_nms`` makes there (without building the
    kept boxes, which are not used).
    """
    cfg = dict(nms_cfg)
    cfg.pop('class_agnostic', None)
    if cfg.pop('type', 'nms') == 'nms' and bboxes.shape[0] < cfg.pop('split_thr', 10000):
        dets, keep = nms(bboxes, scores, **cfg)
    else:
        labels = scores.new_zeros(scores.shape, dtype=torch.long)
        dets, keep = batched_nms(bboxes, scores, labels, dict(nms_cfg), class_agnostic=True)
    return keep[:max_num], dets[:max_num, -1]


def batchnorm_layers(model: nn.Module) -> List[Tuple[str, _BatchNorm]]:
    """(name, module) of every BatchNorm with running statistics, in definition order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def identity_batchnorm_layers(model: nn.Module, training_only: bool = False,
                              atol: float = 1e-4) -> List[str]:
    """Names of BN layers whose running statistics are an identity (mean 0, var 1).

    That is what a BN-folded conversion without calibration leaves (and a fresh
    initialisation). With ``training_only``, only layers in train mode count.
    """
    out = []
    for name, bn in batchnorm_layers(model):
        if training_only and not bn.training:
            continue
        if (torch.all(bn.running_mean == 0)
                and torch.allclose(bn.running_var, torch.ones_like(bn.running_var), atol=atol)):
            out.append(name)
    return out
