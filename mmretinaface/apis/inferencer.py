"""``FaceInferencer``: mmdet's ``DetInferencer`` with landmarks in the results and drawings.

>>> from mmretinaface.apis import FaceInferencer
>>> inferencer = FaceInferencer()                  # default model + converted weights
>>> out = inferencer('photo.jpg', out_dir='outputs/faces', no_save_pred=False)
>>> out['predictions'][0]['keypoints']              # (N, 5, 2) lists, like 'bboxes'
"""
import copy
import os
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import mmengine
import numpy as np
import torch
from mmdet.apis import DetInferencer
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.structures import InstanceData
from torch import nn

from ..datasets.metainfo import FACE_FLIP_INDICES
from ..datasets.transforms.limit_size import LimitSize, check_max_size, limited_size
from ..models.pyramid import SCALE_SETTINGS, FacePyramidTTAModel, scale_setting
from ..models.tta import FaceTTAModel
from ..utils.image_io import load_image, to_bgr_uint8
from .inference import init_face_detector, resolve_model

ImageInput = Union[str, os.PathLike, np.ndarray]
_ANNOTATION_LOADERS = ('LoadFaceAnnotations', 'mmdet.LoadFaceAnnotations', 'LoadAnnotations',
                       'mmdet.LoadAnnotations')
BACKENDS = ('pytorch', 'onnxruntime')


@dataclass(eq=False)
class _Source:
    """One input as the inferencer carries it to ``visualize``: a name and the BGR pixels."""
    path: Optional[str]  # None for array inputs
    image: np.ndarray  # full-size BGR uint8, EXIF applied


class FaceInferencer(DetInferencer):
    """mmdet ``DetInferencer`` for RetinaFace models (boxes + landmarks).

    Args:
        model: a shipped config's name (``'retinaface_mobilenet0.25_widerface'``,
            ``.py`` optional; from any directory), a config path, a ``Config``,
            or a detector built by :func:`init_face_detector` (used as is: the
            PyTorch backend unless ``backend`` says otherwise).
            ``None``: the default model.
        weights: checkpoint path. ``None`` with a config name (or ``model=None``)
            uses its default weights, converted on first use into the cache
            (:func:`~mmretinaface.apis.cache_dir`); with a path: no weights.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``; ``None`` picks CUDA if available.
        max_size: longer-side limit of the network input (the test pipeline's
            ``LimitSize``): ``None`` = the config's limit (4096 for the shipped
            ones), 0 = no limit. Also a per-call option (``None``: this one).
        backend: what runs the network. ``'onnxruntime'`` (the default on CPU,
            the fastest there): the model is exported to ONNX on first use and
            cached by the content of its config and weights
            (:func:`~mmretinaface.deploy.ort_backend.cached_onnx_model`), then
            run by ONNX Runtime with the PyTorch model's own batching and
            post-processing (same faces to float rounding). ``'pytorch'`` (the
            default on CUDA): the torch module (``inferencer.model``). With
            ``None``, a model that cannot be exported falls back to PyTorch with
            a warning.
        int8: run the statically quantized INT8 export (ONNX Runtime only):
            faster on CPU, a slightly different model (docs/deployment.md).
        optimize: PyTorch backend: fold BatchNorm into the convolutions
            (:func:`~mmretinaface.apis.optimize.optimize_for_inference`; the
            same faces to float rounding). ``False`` runs the model as loaded.
        scales: multi-scale inference
            (:class:`~mmretinaface.models.pyramid.FacePyramidTTAModel`): a
            setting's name or factors such as ``(1.0, 2.0)``. ``'single'`` (the
            default): the input only; ``'pyramid'``: also halved copies as the
            image's size needs, for faces larger than the anchors (close-ups);
            ``'crowd'``: also a 1.5x copy (while its longer side stays within
            2048 px) for crowds and small faces, about 3-4x the time. Levels keep the
            face sizes they see well and merge by box voting (docs/inference.md).
        pyramid: ``True`` is ``scales='pyramid'``.
        flip: also run each image mirrored and merge, the left/right landmarks
            swapped back (:class:`~mmretinaface.models.tta.FaceTTAModel`; about
            2x the time; combines with ``scales``).

    Differences from ``DetInferencer``:

    * prediction dicts (and the JSON files written with ``no_save_pred=False``)
      gain ``keypoints``, ``(N, K, 2)`` lists in original-image pixels, in the
      same order as ``bboxes`` / ``scores``;
    * the visualizer is a :class:`FaceLocalVisualizer` (boxes, scores,
      landmarks one colour per point) without vis backends, built on first draw;
    * image files are read with :func:`load_image` (EXIF orientation, 16-bit,
      grayscale and alpha handled) and arrays are taken as BGR (or grayscale /
      BGRA), for both detection and drawing;
    * per-call ``max_size`` and ``vis_max_size`` (drawings downscaled so that
      their longer side is at most this; results stay in original pixels).

    Like ``DetInferencer``, predictions are not thresholded (the model's
    ``test_cfg.score_thr`` applies); ``pred_score_thr`` only affects drawing.
    ``return_datasamples=True`` gives ``DetDataSample`` s whose
    ``pred_instances`` hold tensors (``bboxes``, ``scores``, ``labels``, ``keypoints``).
    """

    preprocess_kwargs: set = {'max_size'}
    visualize_kwargs: set = DetInferencer.visualize_kwargs | {'vis_max_size'}

    def __init__(self,
                 model: Union[str, os.PathLike, Config, nn.Module, None] = None,
                 weights: Optional[Union[str, os.PathLike]] = None,
                 device: Optional[str] = None,
                 scope: Optional[str] = 'mmdet',
                 palette: str = 'none',
                 show_progress: bool = True,
                 max_size: Optional[int] = None,
                 backend: Optional[str] = None,
                 int8: bool = False,
                 optimize: bool = True,
                 scales: Union[str, Sequence[float], None] = None,
                 pyramid: bool = False,
                 flip: bool = False) -> None:
        check_max_size(max_size)
        if pyramid and scales not in (None, 'pyramid'):
            raise ValueError(f"pyramid=True is scales='pyramid'; got scales={scales!r} too")
        self.scales = scale_setting('pyramid' if pyramid else scales or 'single')
        self._max_size = max_size
        if isinstance(model, nn.Module) and backend is None and not int8:
            backend = 'pytorch'  # a built module runs as it is
        self.backend = _pick_backend(backend, int8, device)
        self.int8 = int8
        self._optimize = optimize  # PyTorch backend only (also after a fall-back)
        self._built: Optional[nn.Module] = None
        self._visualizer = None
        if isinstance(model, nn.Module):
            if weights is not None:
                raise ValueError('weights are already loaded in a built model; pass a config '
                                 'to load other weights')
            if not isinstance(getattr(model, 'cfg', None), Config):
                raise ValueError('a built model needs its config as model.cfg '
                                 '(init_face_detector sets it)')
            self._built, model = model, model.cfg
        else:
            model, weights = resolve_model(model, weights)
        super().__init__(model=model, weights=weights, device=device, scope=scope,
                         palette=palette, show_progress=show_progress)
        self.network = self.model
        if self.backend == 'onnxruntime':
            self.network = self._onnxruntime_network(explicit=backend is not None)
        if self.scales != SCALE_SETTINGS['single']:
            self.network = FacePyramidTTAModel(module=self.network, **self.scales)
        if flip:
            self.network = FaceTTAModel(
                module=self.network,
                flip_indices=self.model.dataset_meta.get('flip_indices', FACE_FLIP_INDICES))

    def _onnxruntime_network(self, explicit: bool) -> nn.Module:
        """The model's network in ONNX Runtime; without an explicit backend a model that
        does not export falls back to PyTorch (optimized as ``optimize`` says)."""
        from ..deploy.ort_backend import OnnxRuntimeDetector, cached_onnx_model
        try:
            return OnnxRuntimeDetector(self.model, cached_onnx_model(self.model, self.int8))
        except Exception as err:
            if explicit or self.int8:
                raise
            warnings.warn(f'the model could not run in ONNX Runtime ({type(err).__name__}: '
                          f'{err}); using the PyTorch backend', stacklevel=3)
        self.backend = 'pytorch'
        if self._built is None and self._optimize:
            from .optimize import optimize_for_inference
            optimize_for_inference(self.model)
        return self.model

    # ----------------------------------------------------------------- set-up
    def _init_model(self, cfg: Config, weights: Optional[str], device: str = 'cpu') -> nn.Module:
        """The one builder: weights-only, strict (:func:`init_face_detector`)."""
        if self._built is not None:
            return self._built
        return init_face_detector(cfg, weights, device,
                                  optimize=self._optimize and self.backend == 'pytorch')

    def _init_pipeline(self, cfg: Config) -> Compose:
        """The config's test pipeline fed with decoded BGR arrays, with one ``LimitSize``.

        A pipeline without ``LimitSize`` gets one (no limit unless ``max_size``
        is set) before its last (packing) step. Annotation loading is dropped
        (inputs have no labels: it would only add empty ground truth).
        """
        steps = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        steps = [dict(step) for step in steps]
        if steps[0]['type'] not in ('LoadImageFromFile', 'mmdet.LoadImageFromFile'):
            raise ValueError(f'the test pipeline must start with LoadImageFromFile, got '
                             f'{steps[0]["type"]}')
        steps[0] = dict(type='mmdet.LoadImageFromNDArray')  # images are read by _prepare
        steps = [step for step in steps if step['type'] not in _ANNOTATION_LOADERS]
        if 'meta_keys' in steps[-1]:  # as DetInferencer: no dataset, no img_id
            steps[-1]['meta_keys'] = tuple(k for k in steps[-1]['meta_keys'] if k != 'img_id')
        if not any(step['type'] in ('LimitSize', 'mmdet.LimitSize') for step in steps):
            steps.insert(len(steps) - 1, dict(type='LimitSize', max_size=None))
        pipeline = Compose(steps)
        (self._limit, ) = [t for t in pipeline.transforms if isinstance(t, LimitSize)]
        self._config_max_size = self._limit.max_size or 0
        if self._max_size is not None:
            self._limit.max_size = self._max_size
        return pipeline

    def _init_visualizer(self, cfg: Config) -> None:
        return None  # built on first draw (the `visualizer` property)

    @property
    def visualizer(self):
        """The :class:`FaceLocalVisualizer` (config's drawing options, no vis backends)."""
        if self._visualizer is None:
            from ..visualization import build_face_visualizer
            self._visualizer = build_face_visualizer(self.cfg.get('visualizer'),
                                                     self.model.dataset_meta)
        return self._visualizer

    @visualizer.setter
    def visualizer(self, value) -> None:
        self._visualizer = value

    def _init_collate(self, cfg: Config):
        # mmdet has no FUNCTIONS registry: looking one up only logs a warning
        if 'collate_fn' not in cfg.get('test_dataloader', {}):
            return pseudo_collate
        return super()._init_collate(cfg)

    @property
    def max_size(self) -> int:
        """The longer-side limit applied when a call passes no ``max_size`` (0: none).
        Settable; setting ``None`` restores the config's limit."""
        return self._limit.max_size or 0

    @max_size.setter
    def max_size(self, value: Optional[int]) -> None:
        check_max_size(value)
        self._limit.max_size = self._config_max_size if value is None else value

    # ------------------------------------------------------------ preprocess
    def _inputs_to_list(self, inputs: Any) -> list:
        if isinstance(inputs, os.PathLike):
            inputs = os.fspath(inputs)
        return super()._inputs_to_list(inputs)

    def preprocess(self, inputs: Iterable, batch_size: int = 1,
                   max_size: Optional[int] = None,
                   **kwargs) -> Iterator[Tuple[List[_Source], dict]]:
        """Batches of ``(sources, collated data)``; images are read one batch at a time.

        ``max_size``: this call's longer-side limit (``None``: the inferencer's,
        0: none)."""
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        check_max_size(max_size)
        chunk: list = []
        for item in inputs:
            chunk.append(self._prepare(item, max_size))
            if len(chunk) == batch_size:
                yield self.collate_fn(chunk)
                chunk = []
        if chunk:
            yield self.collate_fn(chunk)

    def _prepare(self, item: ImageInput, max_size: Optional[int] = None
                 ) -> Tuple[_Source, dict]:
        """Read one input and run the test pipeline (``max_size``: this image's limit)."""
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if isinstance(item, str):
            source = _Source(item, load_image(item))
        elif isinstance(item, np.ndarray):
            source = _Source(None, to_bgr_uint8(item))
        else:
            raise TypeError(f'FaceInferencer inputs are image paths or arrays, got '
                            f'{type(item).__name__}')
        default = self._limit.max_size
        if max_size is not None:
            self._limit.max_size = max_size
        try:
            data = self.pipeline(dict(img=source.image))
        finally:
            self._limit.max_size = default
        data['data_samples'].set_metainfo(dict(img_path=source.path))
        return source, data

    # --------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, inputs: dict, **kwargs) -> List[DetDataSample]:
        """``test_step`` of :attr:`network`: the backend's detector, or the
        multi-scale and flip models around it (``scales``, ``flip``)."""
        return self.network.test_step(inputs)

    # ------------------------------------------------------------- visualize
    def visualize(self, inputs: List[_Source], preds: List[DetDataSample],
                  return_vis: bool = False, show: bool = False, wait_time: int = 0,
                  draw_pred: bool = True, pred_score_thr: float = 0.3,
                  no_save_vis: bool = False, img_out_dir: str = '',
                  vis_max_size: Optional[int] = None, **kwargs) -> Optional[List[np.ndarray]]:
        """Draw boxes, scores and landmarks; returns RGB images when ``return_vis``.

        ``vis_max_size``: drawings are downscaled so that their longer side is
        at most this (drawing huge photos is slow and memory-hungry).
        """
        check_max_size(vis_max_size)
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
            image, pred = _fit_drawing(source.image, pred, vis_max_size)
            self.visualizer.add_datasample(
                img_name, image[..., ::-1], pred, show=show, wait_time=wait_time,
                draw_gt=False, draw_pred=draw_pred, pred_score_thr=pred_score_thr,
                out_file=out_file)
            results.append(self.visualizer.get_image())
            self.num_visualized_imgs += 1
        return results

    # ----------------------------------------------------------- postprocess
    def pred2dict(self, data_sample: DetDataSample, pred_out_dir: str = '') -> Dict:
        """``labels``, ``scores``, ``bboxes`` (as ``DetInferencer``) and ``keypoints``."""
        result = instances_to_dict(data_sample.pred_instances)
        if pred_out_dir:
            path = data_sample.metainfo.get('img_path')
            if path:
                stem = osp.splitext(osp.basename(path))[0]
            else:
                stem = str(self.num_predicted_imgs)
                self.num_predicted_imgs += 1
            mmengine.dump(result, osp.join(pred_out_dir, 'preds', f'{stem}.json'))
        return result


def _fit_drawing(image: np.ndarray, pred: DetDataSample, max_size: Optional[int]
                 ) -> Tuple[np.ndarray, DetDataSample]:
    """``image`` downscaled to ``max_size`` with ``pred``'s boxes / landmarks in its pixels."""
    height, width = image.shape[:2]
    new_w, new_h = limited_size(width, height, max_size)
    if (new_w, new_h) == (width, height) or 'pred_instances' not in pred:
        return image, pred
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    instances = pred.pred_instances.clone()
    scale = (new_w / width, new_h / height)
    instances.bboxes = instances.bboxes * instances.bboxes.new_tensor(scale * 2)
    if 'keypoints' in instances:
        instances.keypoints = instances.keypoints * instances.keypoints.new_tensor(scale)
    return small, DetDataSample(pred_instances=instances, metainfo=pred.metainfo)


def instances_to_dict(instances: InstanceData, score_thr: float = 0.0) -> Dict[str, list]:
    """JSON-ready dict: ``bboxes`` (xyxy), ``scores``, ``labels``, ``keypoints`` (N, K, 2).

    Faces scoring below ``score_thr`` are dropped; with no face left every
    field is an empty list.
    """
    keep = instances.scores >= score_thr
    return {key: instances[key][keep].detach().cpu().numpy().tolist()
            for key in ('bboxes', 'scores', 'labels', 'keypoints') if key in instances}


def _pick_backend(backend: Optional[str], int8: bool, device: Optional[str]) -> str:
    """The backend that runs: ``backend``, or ONNX Runtime on CPU / PyTorch on CUDA."""
    on_cuda = device.startswith('cuda') if device else torch.cuda.is_available()
    if backend is None:
        backend = 'onnxruntime' if int8 or not on_cuda else 'pytorch'
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == 'onnxruntime' and on_cuda:
        raise ValueError("backend='onnxruntime' runs on the CPU: pass device='cpu', or use "
                         "backend='pytorch' on CUDA")
    if int8 and backend != 'onnxruntime':
        raise ValueError("int8=True needs backend='onnxruntime'")
    return backend


def detect_faces(detector: Union[FaceInferencer, nn.Module], images: Sequence[ImageInput],
                 batch_size: int = 1, max_size: Optional[int] = None) -> List[InstanceData]:
    """Per-image ``InstanceData`` (tensors: bboxes, scores, labels, keypoints) from
    :class:`FaceInferencer` (``return_datasamples=True``), for tensor-level use.

    ``detector`` is an inferencer or a model built by :func:`init_face_detector`
    (wrapped as is). ``max_size``: as the inferencer's per-call option.
    """
    inferencer = (detector if isinstance(detector, FaceInferencer)
                  else FaceInferencer(detector, show_progress=False))
    out = inferencer(list(images), batch_size=batch_size, return_datasamples=True,
                     max_size=max_size)
    return [sample.pred_instances.cpu() for sample in out['predictions']]
