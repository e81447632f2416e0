"""Horizontal-flip test-time augmentation that merges landmarks correctly."""
from typing import List, Sequence

import torch
from mmcv.ops import batched_nms
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData

from ..datasets.metainfo import FACE_FLIP_INDICES
from .utils import nms_needs_cpu


def unflip_instances(instances: InstanceData, width: float, flip_indices: List[int]
                     ) -> InstanceData:
    """Map predictions on a mirrored image back: ``x -> W - x``, swap left/right points."""
    out = instances.clone()
    boxes = instances.bboxes
    out.bboxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]],
                             dim=-1)
    if 'keypoints' in instances:
        points = instances.keypoints.clone()
        points[..., 0] = width - points[..., 0]
        out.keypoints = points[:, flip_indices]
    return out


def mirror_data(data: dict) -> dict:
    """A batch as the data preprocessor takes it (``inputs``: ``(C, H, W)`` images) with
    every image mirrored left-right; new samples (the metainfo only) marked
    ``flip=True, flip_direction='horizontal'`` so :class:`FaceTTAModel` maps them back."""
    samples = []
    for sample in data['data_samples']:
        meta = dict(sample.metainfo, flip=True, flip_direction='horizontal')
        samples.append(DetDataSample(metainfo=meta))
    return dict(inputs=[image.flip(-1) for image in data['inputs']], data_samples=samples)


@MODELS.register_module()
class FaceTTAModel(BaseTTAModel):
    """Merge the views of ``TestTimeAug`` (e.g. original + mirrored) with one more NMS.

    ``test_step`` takes a list of view batches (``tools/test.py --tta``: the
    config's ``tta_pipeline``) or one batch, which it runs as is and mirrored
    (:func:`mirror_data`; ``FaceInferencer(flip=True)``).

    Each view's predictions are in original-image pixels (``rescale=True``);
    mirrored views are mapped back with :func:`unflip_instances` using the
    ``flip_indices`` of the dataset (default: the five face landmarks of
    :mod:`mmretinaface.datasets.metainfo`).

    Args:
        tta_cfg: ``nms`` (an mmcv NMS config) and ``max_per_img``.
        flip_indices: left/right permutation of the landmarks.
    """

    def __init__(self, tta_cfg: dict = None, flip_indices: Sequence[int] = FACE_FLIP_INDICES,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.tta_cfg = tta_cfg or dict(nms=dict(type='nms', iou_threshold=0.4), max_per_img=750)
        self.flip_indices = list(flip_indices)

    def test_step(self, data) -> List[DetDataSample]:
        if isinstance(data, dict) and isinstance(data['inputs'][0], torch.Tensor):
            mirrored = mirror_data(data)  # one batch: itself and its mirror image, as views
            data = {key: [data[key], mirrored[key]] for key in ('inputs', 'data_samples')}
        return super().test_step(data)

    def merge_preds(self, data_samples_list: List[List[DetDataSample]]) -> List[DetDataSample]:
        return [self._merge_single(views) for views in data_samples_list]

    def _merge_single(self, views: List[DetDataSample]) -> DetDataSample:
        merged = []
        for view in views:
            pred = view.pred_instances
            if view.metainfo.get('flip', False):
                if view.metainfo.get('flip_direction', 'horizontal') != 'horizontal':
                    raise ValueError('FaceTTAModel only undoes horizontal flips')
                pred = unflip_instances(pred, float(view.ori_shape[1]), self.flip_indices)
            merged.append(pred)
        preds = InstanceData.cat(merged)
        if len(preds):
            # as in the head, NMS runs on the CPU whatever the device (mmcv's CPU ops)
            host = preds.cpu() if nms_needs_cpu(preds.bboxes.device) else preds
            _, keep = batched_nms(host.bboxes, host.scores, host.labels, self.tta_cfg['nms'])
            preds = preds[keep.to(preds.bboxes.device)]
        max_per_img = self.tta_cfg.get('max_per_img', -1)
        if max_per_img > 0:
            preds = preds[:max_per_img]
        result = views[0].clone()  # keeps the unflipped view's gt and metainfo
        result.pred_instances = preds
        return result
