"""The prepared arrays as torch tensors, and the one scaling every model's input gets."""

from typing import NamedTuple

import numpy as np
import torch


class Split(NamedTuple):
    """One split of the prepared data: uint8 images (N, 3, S, S), 0/1 labels, mean luminance in [0, 1]."""
    x: torch.Tensor
    y: torch.Tensor
    brightness: torch.Tensor


def as_tensors(x: np.ndarray, y: np.ndarray, brightness: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.float32)),
                 torch.from_numpy(np.asarray(brightness, dtype=np.float32)))


def to_input(batch: torch.Tensor, device: torch.device, memory_format=torch.preserve_format) -> torch.Tensor:
    """uint8 images [0, 255] -> float [-1, 1], as the seeds normalised; float inputs (cached features) as they are.
    memory_format: channels-last for a convolutional model on CUDA and the CPU (device.DevicePolicy)."""
    batch = batch.to(device, non_blocking=True, memory_format=memory_format)
    return batch.float().div_(127.5).sub_(1.0) if batch.dtype == torch.uint8 else batch


def batch_rows(batch_size, n: int) -> int:
    """Rows per batch for a model entry's batch_size: an integer, or "full" (all n at once)."""
    return n if batch_size == "full" else batch_size
