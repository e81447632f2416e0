"""ONNX export of a RetinaFace detector, optionally with decoding in the graph.

Input ``image``: ``(B, 3, H, W)`` float32 BGR pixels in 0..255 (the mean is
subtracted inside the graph); batch, height and width are dynamic.
Outputs without decoding (the reference layout): ``loc (B, P, 4)``,
``conf (B, P, 2)`` softmaxed, ``landmarks (B, P, 2K)``. With decoding:
``boxes (B, P, 4)`` xyxy pixels, ``scores (B, P)``, ``landmarks (B, P, K, 2)``
pixels; score threshold and NMS stay outside the graph.
"""
from typing import Tuple

import torch
from torch import Tensor, nn


class RetinaFaceExportWrapper(nn.Module):
    """Wraps a built mmdet ``SingleStageDetector`` with a ``RetinaFaceHead``."""

    def __init__(self, detector: nn.Module, decode: bool = False) -> None:
        super().__init__()
        self.detector = detector
        self.decode = decode
        preprocessor = detector.data_preprocessor
        self.register_buffer('mean', preprocessor.mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer('std', preprocessor.std.detach().clone().view(1, -1, 1, 1))
        if getattr(preprocessor, '_channel_conversion', False):
            raise ValueError('export expects a BGR model (data_preprocessor.bgr_to_rgb=False)')

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x = (image - self.mean) / self.std
        head = self.detector.bbox_head
        outs = head(self.detector.extract_feat(x))
        if self.decode:
            scores, boxes, points = head.decode(*outs, cached_priors=False)
            return boxes, scores, points
        cls, reg, kpt = head.flatten_outputs(*outs)
        return reg, torch.softmax(cls, dim=-1), kpt


def export_onnx(detector: nn.Module, out_file: str, decode: bool = False, opset: int = 17,
                sample_hw: Tuple[int, int] = (480, 640)) -> None:
    """Export with dynamic batch / height / width and check it loads in onnx."""
    wrapper = RetinaFaceExportWrapper(detector.eval(), decode=decode).eval()
    sample = torch.zeros(1, 3, *sample_hw)
    names = ['boxes', 'scores', 'landmarks'] if decode else ['loc', 'conf', 'landmarks']
    dynamic_axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}}
    dynamic_axes.update({name: {0: 'batch', 1: 'priors'} for name in names})
    with torch.no_grad():
        torch.onnx.export(wrapper, (sample, ), out_file, input_names=['image'],
                          output_names=names, dynamic_axes=dynamic_axes, opset_version=opset,
                          dynamo=False)
    import onnx
    onnx.checker.check_model(onnx.load(out_file))
