"""WIDER FACE dataset reading RetinaFace ``label.txt`` or the official bbx_gt files."""
from __future__ import annotations

import os.path as osp
from typing import List, Optional

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from mmengine.fileio import LocalBackend, get_file_backend, get_text
from mmengine.logging import print_log

from .label_io import (
    FaceLabel,
    ImageLabels,
    detect_label_format,
    parse_retinaface_labels,
    parse_wider_bbx_gt,
)
from .metainfo import FACE_METAINFO


def face_to_instance(face: FaceLabel, num_keypoints: int) -> dict:
    """Turn one parsed face into an mmdet instance dict.

    ``bbox`` is ``[x, y, x + w, y + h]`` (no ``+1``: the label's ``x y w h``
    are continuous pixel coordinates). ``ignore_flag`` is 1 for the official
    ``invalid`` flag and for degenerate boxes (``w <= 0`` or ``h <= 0``),
    which would otherwise give ``log(0)`` box targets. A landmark is visible
    iff both its coordinates are ``>= 0`` (the labels write ``-1`` for
    missing points; the reference treats a face whose first point is ``-1``
    as having none, which this rule includes). Coordinates of invisible
    points are kept as written and mean nothing.
    """
    x, y, w, h = (float(v) for v in face.xywh)
    keypoints = np.zeros((num_keypoints, 2), dtype=np.float32)
    visible = np.zeros(num_keypoints, dtype=np.float32)
    if face.landmarks is not None:
        keypoints[:] = face.landmarks[:, :2]
        visible[:] = ((keypoints[:, 0] >= 0) & (keypoints[:, 1] >= 0)).astype(np.float32)
    degenerate = w <= 0 or h <= 0
    return dict(
        bbox=[x, y, x + w, y + h],
        bbox_label=0,
        ignore_flag=int(degenerate or face.invalid),
        keypoints=keypoints,
        keypoints_visible=visible)


@DATASETS.register_module()
class WiderFaceDataset(BaseDetDataset):
    """Faces with ``K`` landmarks from a WIDER FACE style label file.

    Not to be confused with mmdet's ``WIDERFaceDataset`` (VOC-style XML,
    boxes only).

    Args:
        ann_file: RetinaFace ``label.txt`` or official ``wider_face_*_bbx_gt.txt``.
        data_prefix: ``dict(img=...)``: the folder the label's image paths
            are relative to.
        num_keypoints: landmarks per face ``K`` (5 by default). For ``K != 5``
            pass ``metainfo=dict(keypoint_names=..., flip_indices=...)``.
        label_format: ``'auto'`` (by the first line: ``#`` means RetinaFace),
            ``'retinaface'`` or ``'wider'``.
        filter_cfg: ``dict(filter_empty_gt=True)`` drops images without any
            non-ignored face (training only; ``test_mode`` keeps everything).

    Every image the label file lists must exist: on a local file system the
    dataset checks them when it is built (one ``stat`` per image) and raises
    ``FileNotFoundError`` naming the first missing ones and their count,
    instead of failing when the sampler reaches one mid-epoch.

    Each ``data_info`` holds ``img_path``, ``img_id`` (the relative path
    without extension, e.g. ``0--Parade/0_Parade_marchingband_1_465``),
    ``instances`` (see :func:`face_to_instance`) and, when the label gives
    them, ``width``/``height``. :meth:`get_data_info` also adds
    ``flip_indices`` and ``num_keypoints`` for the flip transform.
    """

    METAINFO = dict(FACE_METAINFO, palette=[(0, 255, 0)])

    def __init__(self, *args, num_keypoints: int = 5, label_format: str = 'auto',
                 **kwargs) -> None:
        if label_format not in ('auto', 'retinaface', 'wider'):
            raise ValueError(f'label_format must be auto|retinaface|wider, got {label_format!r}')
        if num_keypoints < 1:
            raise ValueError(f'num_keypoints must be >= 1, got {num_keypoints}')
        self.num_keypoints = int(num_keypoints)
        self.label_format = label_format
        super().__init__(*args, **kwargs)
        self._check_metainfo()  # also when lazy_init=True

    @classmethod
    def _load_metainfo(cls, metainfo: Optional[dict] = None) -> dict:
        meta = super()._load_metainfo(metainfo)
        meta['flip_indices'] = list(meta['flip_indices'])
        meta['keypoint_names'] = tuple(meta['keypoint_names'])
        return meta

    def _check_metainfo(self) -> None:
        k = self.num_keypoints
        self._metainfo['num_keypoints'] = k
        names, flip = self._metainfo['keypoint_names'], self._metainfo['flip_indices']
        if len(names) != k or len(flip) != k or sorted(flip) != list(range(k)):
            raise ValueError(
                f'num_keypoints={k} needs metainfo keypoint_names ({len(names)} given) and '
                f'flip_indices (a permutation of range({k}), got {flip}); pass them as '
                'metainfo=dict(keypoint_names=[...], flip_indices=[...])')

    def load_data_list(self) -> List[dict]:
        """Parse ``ann_file`` into mmdet ``data_info`` dicts."""
        self._check_metainfo()
        lines = get_text(self.ann_file, backend_args=self.backend_args).splitlines()
        fmt = detect_label_format(lines) if self.label_format == 'auto' else self.label_format
        if fmt == 'retinaface':
            images = parse_retinaface_labels(lines, self.num_keypoints, filename=self.ann_file)
        else:
            images = parse_wider_bbx_gt(lines, filename=self.ann_file)
        data_list = [self.parse_data_info(image) for image in images]
        if not data_list:
            raise ValueError(f'{self.ann_file}: the label file lists no images (expected '
                             f'{fmt} labels; docs/data.md)')
        self._check_images_exist(data_list)
        return data_list

    def _check_images_exist(self, data_list: List[dict], show: int = 5) -> None:
        """Raise if images listed in ``ann_file`` are missing (local storage only)."""
        backend = get_file_backend(self.data_prefix.get('img', '') or self.ann_file,
                                   backend_args=self.backend_args)
        if not isinstance(backend, LocalBackend):
            return
        missing = [info['img_path'] for info in data_list if not osp.isfile(info['img_path'])]
        if missing:
            raise FileNotFoundError(
                f'{len(missing)} of {len(data_list)} images listed in {self.ann_file} are '
                f'missing under {self.data_prefix.get("img", "")!r}: '
                + ', '.join(missing[:show]) + (' ...' if len(missing) > show else '')
                + '. Check data_root / data_prefix.img (the folder the label\'s paths are '
                'relative to) or remove those entries from the label file (docs/data.md).')

    def parse_data_info(self, raw_data_info: ImageLabels) -> dict:
        """One image's labels -> ``data_info``."""
        img_root = self.data_prefix.get('img', '')
        info = dict(
            img_path=osp.join(img_root, raw_data_info.path),
            img_id=osp.splitext(raw_data_info.path)[0],
            instances=[face_to_instance(f, self.num_keypoints) for f in raw_data_info.faces])
        if raw_data_info.width is not None:
            info['width'], info['height'] = raw_data_info.width, raw_data_info.height
        return info

    def filter_data(self) -> List[dict]:
        """Drop images without a usable (non-ignored) face when training.

        Enabled by ``filter_cfg=dict(filter_empty_gt=True)``; ``test_mode``
        datasets are never filtered, so evaluation sees every image.
        """
        if self.test_mode or not self.filter_cfg or not self.filter_cfg.get(
                'filter_empty_gt', False):
            return self.data_list
        kept = [info for info in self.data_list
                if any(not inst['ignore_flag'] for inst in info['instances'])]
        dropped = len(self.data_list) - len(kept)
        if not kept:  # mmengine would fail later on an empty list, obscurely
            raise ValueError(
                f'{self.ann_file}: none of its {len(self.data_list)} images has a usable face '
                '(every face is ignored or the images have none), so filter_empty_gt=True '
                'leaves nothing to train on: check the labels (docs/data.md)')
        if dropped:
            print_log(f'{type(self).__name__}: dropped {dropped} of {len(self.data_list)} '
                      f'images without a usable face ({self.ann_file})', logger='current')
        return kept

    def get_data_info(self, idx: int) -> dict:
        """``data_info`` plus ``flip_indices`` and ``num_keypoints`` for the pipeline."""
        info = super().get_data_info(idx)
        info['flip_indices'] = list(self._metainfo['flip_indices'])
        info['num_keypoints'] = self.num_keypoints
        return info
