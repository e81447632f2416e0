"""ONNX export of a RetinaFace detector: raw, decoded, or per-level outputs.

Input ``image``: ``(B, 3, H, W)`` float32 pixels in 0..255 in the channel order
the detector's data preprocessor takes (BGR for the shipped configs); its
normalisation (channel flip, mean, std) is inside the graph, except for
``'levels'``. Batch, height and width are dynamic. Output layouts (``outputs=``):

* ``'raw'`` (the reference layout): ``loc (B, P, 4)``, ``conf (B, P, 2)``
  softmaxed, ``landmarks (B, P, 2K)``;
* ``'decoded'``: ``boxes (B, P, 4)`` xyxy pixels, ``scores (B, P)``,
  ``landmarks (B, P, K, 2)`` pixels; score threshold and NMS stay outside;
* ``'levels'``: mmdet's ``mode='tensor'``: the input is the data
  preprocessor's normalised batch and the outputs the head's maps, one
  ``head_i`` per level (NCHW): its class, box and landmark channels one after
  the other (:meth:`RetinaFaceExportWrapper.split_levels` gives the head's
  three lists), which the head's own ``predict_by_feat`` turns into detections
  (what ``FaceInferencer(backend='onnxruntime')`` runs; normalising while
  converting the pixels to float costs less than a pass over the input in
  the graph).
"""
import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

OUTPUT_LAYOUTS = ('raw', 'decoded', 'levels')


@torch.no_grad()
def input_normalization(preprocessor: nn.Module) -> Tuple[bool, Tensor, Tensor, float]:
    """``(flip_channels, mean, std, pad_value)`` of an mmdet data preprocessor, probed
    through its public call: it maps a 3-channel image ``x`` to
    ``(x[flip] - mean) / std`` and pads with ``pad_value``. Where the probed values
    are its ``mean`` / ``std`` buffers (mmengine's), those exact values are returned."""
    probe = [torch.tensor([0., 1., 2.]).view(3, 1, 1), torch.zeros(3, 1, 1), torch.ones(3, 1, 1)]
    ramp, zero, one = (preprocessor(dict(inputs=[p]), False)['inputs'][0, :, 0, 0].double()
                       for p in probe)  # the top-left pixel: the batch may be padded
    std = 1 / (one - zero)
    mean = -zero * std
    flipped = ramp * std + mean
    flip = bool(torch.allclose(flipped, torch.tensor([2., 1., 0.], dtype=torch.float64)))
    if not flip and not torch.allclose(flipped, torch.tensor([0., 1., 2.], dtype=torch.float64)):
        raise ValueError('the data preprocessor is not a per-channel normalisation')
    buffers = [getattr(preprocessor, name, None) for name in ('mean', 'std')]  # exact values
    if all(isinstance(b, Tensor) and b.numel() == 3 and torch.allclose(
            b.view(3).double(), probed, rtol=1e-4) for b, probed in zip(buffers, (mean, std))):
        mean, std = (b.view(3) for b in buffers)
    return flip, mean.float(), std.float(), float(getattr(preprocessor, 'pad_value', 0))


class RetinaFaceExportWrapper(nn.Module):
    """Wraps a built mmdet ``SingleStageDetector`` with a ``RetinaFaceHead``."""

    def __init__(self, detector: nn.Module, outputs: str = 'raw') -> None:
        super().__init__()
        if outputs not in OUTPUT_LAYOUTS:
            raise ValueError(f'outputs must be one of {OUTPUT_LAYOUTS}, got {outputs!r}')
        self.detector = detector
        self.outputs = outputs
        self.flip, mean, std, _ = input_normalization(detector.data_preprocessor)
        self.register_buffer('mean', mean.view(1, -1, 1, 1))
        self.register_buffer('std', std.view(1, -1, 1, 1))
        # the reference models use std 1: leave the division out of the graph then (one
        # pass less over the input, ~5% of the ONNX Runtime latency at 640x480)
        self.unit_std = bool(torch.all(self.std == 1))

    def output_names(self) -> List[str]:
        if self.outputs == 'levels':
            return [f'head_{i}' for i in range(self.detector.bbox_head.prior_generator.num_levels)]
        return ['boxes', 'scores', 'landmarks'] if self.outputs == 'decoded' else [
            'loc', 'conf', 'landmarks']

    def merged_head_maps(self, x: Tensor) -> List[Tensor]:
        """Per level, the class, box and landmark 1x1 convs as one conv (the same values):
        ONNX Runtime runs it faster than three narrow convs that each reorder their input
        (A/B at 640x480 on AVX2: 0.5% of the FP32 export, 2% of the INT8 one)."""
        head = self.detector.bbox_head
        return [F.conv2d(feat, torch.cat([c.weight for c in convs]),
                         torch.cat([c.bias for c in convs]))
                for feat, *convs in zip(self.detector.extract_feat(x), head.cls_convs,
                                        head.reg_convs, head.kpt_convs)]

    @staticmethod
    def split_levels(head: nn.Module, maps: List[Tensor]
                     ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """:meth:`merged_head_maps` (the ``'levels'`` outputs) -> the head's three lists as
        channel views (a split in the graph would copy: 0.9% of the FP32 export)."""
        parts = [m.split([c.out_channels for c in convs], 1) for m, *convs in zip(
            maps, head.cls_convs, head.reg_convs, head.kpt_convs)]
        return tuple(list(kind) for kind in zip(*parts))

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        head = self.detector.bbox_head
        if self.outputs == 'levels':
            return tuple(self.merged_head_maps(image))
        x = (image.flip(1) if self.flip else image) - self.mean
        if not self.unit_std:
            x = x / self.std
        outs = self.split_levels(head, self.merged_head_maps(x))
        # the head's own flatten / priors / decode, as its loss and predict_by_feat use
        cls, reg, kpt = head.flatten_outputs(*outs)
        probs = cls.softmax(dim=-1)
        if self.outputs == 'raw':
            return reg, probs, kpt
        boxes, points = head.decode(head.get_priors(outs[0], cached=False), reg, kpt)
        return boxes, probs[..., 1], points


def export_onnx(detector: nn.Module, out_file: str, outputs: str = 'raw', opset: int = 17,
                sample_hw: Tuple[int, int] = (480, 640), rewrite: bool = True) -> None:
    """Export with dynamic batch / height / width (``outputs``: a layout of the module
    doc), apply the exact FP32 graph rewrites (:func:`~.graph_rewrites.rewrite_fp32_graph`;
    ``rewrite=False``: the graph as ``torch.onnx`` writes it, to measure them) and check
    the model."""
    wrapper = RetinaFaceExportWrapper(detector.eval(), outputs).eval()
    sample = torch.zeros(1, 3, *sample_hw)
    names = wrapper.output_names()
    dynamic_axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}}
    dynamic_axes.update({name: ({0: 'batch', 2: f'{name}_h', 3: f'{name}_w'}
                                if outputs == 'levels' else {0: 'batch', 1: 'priors'})
                         for name in names})
    with torch.no_grad(), warnings.catch_warnings():
        # the prior sizes / steps are config constants: tracing them as such is intended
        warnings.filterwarnings('ignore', message='torch.as_tensor results are registered',
                                category=torch.jit.TracerWarning)
        torch.onnx.export(wrapper, (sample, ), out_file, input_names=['image'],
                          output_names=names, dynamic_axes=dynamic_axes, opset_version=opset,
                          dynamo=False)
    import onnx

    from .graph_rewrites import rewrite_fp32_graph
    model = onnx.load(out_file)
    if rewrite:  # exact; ONNX Runtime runs the result faster (docs/deployment.md)
        rewrite_fp32_graph(model)
    onnx.checker.check_model(model)
    onnx.save(model, out_file)


#: Agreement expected between onnxruntime and PyTorch (see tests/test_export_onnx.py):
#: raw regressions / probabilities absolutely; decoded pixel coordinates with a
#: relative term (float32 rounding of coordinates up to thousands of pixels) plus
#: an absolute one (raw differences of ~1e-5 times the decoding's variance x prior
#: size, 0.1 x up to 512 px).
RAW_ATOL = 1e-4
PIXEL_RTOL, PIXEL_ATOL = 1e-6, 1e-3


def compare_with_pytorch(detector: nn.Module, onnx_file: str, outputs: str = 'raw',
                         size: Tuple[int, int] = (320, 416), batch: int = 2,
                         seed: int = 0) -> Dict[str, float]:
    """Run a random ``(batch, 3, *size)`` image through onnxruntime and PyTorch.

    Returns, per output name, the largest violation ratio ``|onnx - torch| /
    tolerance`` (``<= 1`` means within :data:`RAW_ATOL` or, for decoded pixel
    outputs, ``PIXEL_ATOL + PIXEL_RTOL * |torch|``).
    """
    import onnxruntime as ort
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (batch, 3, *size)).astype(np.float32)
    if outputs == 'levels':
        image -= 128
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    names = [out.name for out in session.get_outputs()]
    ours = session.run(None, {session.get_inputs()[0].name: image})
    wrapper = RetinaFaceExportWrapper(detector.eval(), outputs).eval()
    with torch.no_grad():
        ref = [t.cpu().numpy() for t in wrapper(torch.from_numpy(image).to(
            next(detector.parameters()).device))]
    ratios = {}
    for name, got, want in zip(names, ours, ref):
        if got.shape != want.shape:
            raise ValueError(f'{name}: onnx shape {got.shape} != torch shape {want.shape}')
        pixel = outputs == 'decoded' and name in ('boxes', 'landmarks')
        tol = PIXEL_ATOL + PIXEL_RTOL * np.abs(want) if pixel else RAW_ATOL
        ratios[name] = float((np.abs(got - want) / tol).max()) if got.size else 0.0
    return ratios
