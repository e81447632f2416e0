"""Device placement of NMS, shared by the head and test-time augmentation."""
import torch


def nms_needs_cpu(device: torch.device) -> bool:
    """Whether NMS on tensors of ``device`` runs on the CPU instead.

    mmcv's ops are built for the CPU on every machine (``make setup``: no CUDA
    kernels, no CUDA toolkit needed), and NMS only sees the candidates left
    after the score threshold and ``nms_pre`` (a few hundred, at most
    thousands), so tensors on any other device go to the CPU for NMS and come
    back: the results are those of the CPU path.
    """
    return torch.device(device).type != 'cpu'
