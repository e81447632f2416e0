"""``FaceInferencer``: mmdet's ``DetInferencer`` with landmarks in the results and drawings.

>>> from mmretinaface.apis import FaceInferencer
>>> inferencer = FaceInferencer()                  # default config + converted weights
>>> out = inferencer('photo.jpg', out_dir='outputs/faces', no_save_pred=False)
>>> out['predictions'][0]['keypoints']              # (N, 5, 2) lists, like 'bboxes'
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import mmengine
import numpy as np
from mmdet.apis import DetInferencer
from mmdet.structures import DetDataSample
from mmengine.dataset import pseudo_collate

from .image_io import load_image, to_bgr_uint8
from .inference import (
    DEFAULT_CONFIG,
    DEFAULT_MAX_SIZE,
    DEFAULT_WEIGHTS,
    check_weights_path,
    fit_max_size,
    rescale_instances,
)

_UNSET = object()


@dataclass(eq=False)
class _Source:
    """One input as the inferencer carries it to ``visualize``: a name and the BGR pixels."""
    path: Optional[str]  # None for array inputs
    image: np.ndarray  # full-size BGR uint8, EXIF applied


class FaceInferencer(DetInferencer):
    """mmdet ``DetInferencer`` for RetinaFace models (boxes + landmarks).

    Differences from ``DetInferencer``:

    * ``model=None`` uses the default config and the converted checkpoint
      (:data:`DEFAULT_CONFIG`, :data:`DEFAULT_WEIGHTS`);
    * prediction dicts (and the JSON files written with ``no_save_pred=False``)
      gain ``keypoints``, ``(N, K, 2)`` lists in original-image pixels, in the
      same order as ``bboxes`` / ``scores``;
    * the visualizer is a :class:`FaceLocalVisualizer` (boxes, scores,
      landmarks one colour per point) without vis backends;
    * image files are read with :func:`load_image` (EXIF orientation, 16-bit,
      grayscale and alpha handled) and arrays are taken as BGR (or grayscale /
      BGRA), for both detection and drawing;
    * ``max_size``: images whose longer side exceeds it are downscaled for the
      network and the results mapped back to original pixels (``None`` or 0:
      no limit). Set it at construction or per call (``inferencer(img,
      max_size=2048)``).

    Like ``DetInferencer``, predictions are not thresholded (the model's
    ``test_cfg.score_thr`` applies); ``pred_score_thr`` only affects drawing.
    """

    preprocess_kwargs: set = {'max_size'}

    def __init__(self,
                 model: Optional[Union[str, os.PathLike, dict]] = None,
                 weights: Optional[Union[str, os.PathLike]] = None,
                 device: Optional[str] = None,
                 scope: Optional[str] = 'mmdet',
                 palette: str = 'none',
                 show_progress: bool = True,
                 max_size: Optional[int] = DEFAULT_MAX_SIZE) -> None:
        if model is None:
            model = DEFAULT_CONFIG
            if weights is None:
                weights = DEFAULT_WEIGHTS
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if isinstance(model, str) and not osp.isfile(model):
            raise FileNotFoundError(f'config not found: {model}')
        if weights is not None:
            weights = check_weights_path(weights)
        if max_size is not None and max_size < 0:
            raise ValueError(f'max_size must be >= 0 (0 or None: no limit), got {max_size}')
        self.max_size = max_size
        super().__init__(model=model, weights=weights, device=device, scope=scope,
                         palette=palette, show_progress=show_progress)

    # ----------------------------------------------------------------- set-up
    def _init_model(self, cfg, weights: Optional[str], device: str = 'cpu'):
        """Build and load like :func:`build_face_detector`: weights-only and strict."""
        from .inference import build_face_detector
        return build_face_detector(cfg, weights, device)

    def _init_visualizer(self, cfg) -> Any:
        from ..visualization import build_face_visualizer
        return build_face_visualizer(cfg.get('visualizer'), self.model.dataset_meta)

    def _init_collate(self, cfg):
        # mmdet has no FUNCTIONS registry: looking one up only logs a warning
        if 'collate_fn' not in cfg.get('test_dataloader', {}):
            return pseudo_collate
        return super()._init_collate(cfg)

    # ------------------------------------------------------------ preprocess
    def preprocess(self, inputs: Iterable, batch_size: int = 1, max_size: Any = _UNSET,
                   **kwargs) -> Iterator:
        max_size = self.max_size if max_size is _UNSET else max_size
        chunks = self._get_face_chunks(inputs, batch_size, max_size)
        yield from map(self.collate_fn, chunks)

    def _load(self, item: Any) -> _Source:
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if isinstance(item, str):
            return _Source(item, load_image(item))
        if isinstance(item, np.ndarray):
            return _Source(None, to_bgr_uint8(item))
        raise TypeError(f'FaceInferencer inputs are image paths or arrays, got '
                        f'{type(item).__name__}')

    def _get_face_chunks(self, inputs: Iterable, chunk_size: int, max_size: Optional[int]
                         ) -> Iterator[List[Tuple[_Source, dict]]]:
        chunk: List[Tuple[_Source, dict]] = []
        for item in inputs:
            source = self._load(item)
            image, scale = fit_max_size(source.image, max_size)
            data = self.pipeline(dict(img=image))
            data['data_samples'].set_metainfo(dict(
                img_path=source.path, input_scale=scale,
                full_shape=source.image.shape[:2]))
            chunk.append((source, data))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # --------------------------------------------------------------- forward
    def forward(self, inputs: Union[dict, tuple], **kwargs) -> List[DetDataSample]:
        preds = super().forward(inputs, **kwargs)
        for pred in preds:
            scale = pred.metainfo.get('input_scale', (1.0, 1.0))
            if 'pred_instances' in pred:
                pred.pred_instances = rescale_instances(pred.pred_instances, scale)
            if 'full_shape' in pred.metainfo:
                pred.set_metainfo(dict(ori_shape=tuple(pred.full_shape)))
        return preds

    # ------------------------------------------------------------- visualize
    def visualize(self, inputs: List[_Source], preds: List[DetDataSample],
                  return_vis: bool = False, show: bool = False, wait_time: int = 0,
                  draw_pred: bool = True, pred_score_thr: float = 0.3,
                  no_save_vis: bool = False, img_out_dir: str = '',
                  **kwargs) -> Optional[List[np.ndarray]]:
        """Draw boxes, scores and landmarks; returns RGB images when ``return_vis``."""
        if no_save_vis:
            img_out_dir = ''
        if not show and img_out_dir == '' and not return_vis:
            return None
        results = []
        for source, pred in zip(inputs, preds):
            if source.path is not None:
                img_name = osp.basename(source.path)
            else:
                img_name = f'{str(self.num_visualized_imgs).zfill(8)}.jpg'
            out_file = osp.join(img_out_dir, 'vis', img_name) if img_out_dir else None
            self.visualizer.add_datasample(
                img_name, source.image[..., ::-1], pred, show=show, wait_time=wait_time,
                draw_gt=False, draw_pred=draw_pred, pred_score_thr=pred_score_thr,
                out_file=out_file)
            results.append(self.visualizer.get_image())
            self.num_visualized_imgs += 1
        return results

    # ----------------------------------------------------------- postprocess
    def pred2dict(self, data_sample: DetDataSample, pred_out_dir: str = '') -> Dict:
        """DetInferencer's dict (``labels``, ``scores``, ``bboxes``) plus ``keypoints``."""
        result = super().pred2dict(data_sample, '')
        instances = data_sample.get('pred_instances')
        if instances is not None and 'keypoints' in instances:
            result['keypoints'] = instances.keypoints.detach().cpu().numpy().tolist()
        if pred_out_dir:
            path = data_sample.metainfo.get('img_path')
            if path:
                stem = osp.splitext(osp.basename(path))[0]
            else:
                stem = str(self.num_predicted_imgs)
                self.num_predicted_imgs += 1
            mmengine.dump(result, osp.join(pred_out_dir, 'preds', f'{stem}.json'))
        return result
