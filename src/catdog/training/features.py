"""The frozen backbone's features, computed once and cached on disk: a frozen ImageNet backbone gives the same
features every epoch, so a head trains on them alone (training.loop) in a fraction of the time."""

import hashlib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catdog.device import DevicePolicy
from catdog.files import atomic_path
from catdog.inference import forward
from catdog.models.architectures import frozen_backbone
from catdog.paths import FEATURE_CACHE, repo_root
from catdog.training import distributed


def cacheable(model, cfg: dict) -> bool:
    """A frozen backbone trained without augmentation sees the same images, so gives the same features, each epoch."""
    return frozen_backbone(model) and not cfg.get("augment")


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def library_versions(engine: str) -> str:
    """The libraries whose kernels compute the features: torch always (the ONNX graph is its export), and
    ONNX Runtime for its engine. An upgrade can change their round-off, so it must not reuse older features."""
    if engine != "onnxruntime":
        return f"torch {torch.__version__}"
    return f"torch {torch.__version__} onnxruntime {version('onnxruntime')}"  # installed: engine_for checked it


def feature_cache_path(backbone: nn.Module, x: torch.Tensor, policy: DevicePolicy, engine: str = "torch") -> Path:
    """Where backbone_features keeps the features of x: the repository's cache, shared by queued experiments,
    keyed by the weights, the images and the libraries' versions. engine: 'torch' or 'onnxruntime'
    (inference.forward.engine_for), whose kernels round differently."""
    key = _digest(np.frombuffer(library_versions(engine).encode(), dtype=np.uint8),
                  *(v.cpu().numpy() for v in backbone.state_dict().values()), x.numpy())
    if engine == "onnxruntime":  # float32 on the CPU, its own graph: PyTorch's precision and layout do not apply
        return repo_root() / FEATURE_CACHE / f"{key}-onnxruntime.npy"
    suffix = "" if policy.amp_dtype is None else f"-{policy.precision}"
    suffix += "-channels_last" if policy.memory_format == torch.channels_last else ""
    suffix += "" if policy.device.type == "cpu" else f"-{policy.device.type}"
    return repo_root() / FEATURE_CACHE / f"{key}{suffix}.npy"


@torch.no_grad()
def backbone_features(backbone: nn.Module, x: torch.Tensor, device, batch_size: int = 64,
                      precision: str = "auto", inference: str = "auto") -> torch.Tensor:
    """The backbone's features of every image, computed once per (weights, images, engine, precision, memory
    layout, device kind) and then read from disk: features differ in round-off between ONNX Runtime and PyTorch,
    between bf16, fp16 and float32, between layouts, and between a GPU's kernels and the CPU's. PyTorch float32
    on the CPU has no suffix. inference: train.inference; ONNX Runtime runs the backbone exported as a graph of
    its own (inference.onnx, .cache/onnx)."""
    policy = DevicePolicy(device, backbone, precision)
    engine = forward.engine_for(inference, backbone, policy.device, precision, backbone=True)
    path = feature_cache_path(backbone, x, policy, engine)
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    batches = distributed.progress(range(0, len(x), batch_size), desc="backbone features", unit="batch")
    if engine == "onnxruntime":
        run = forward.runner(backbone, x.shape[-1], policy.device, precision, engine, backbone=True)
        features = torch.cat([run(x[i:i + batch_size], batch_size) for i in batches])
    else:
        policy.place(backbone).eval()
        with policy.autocast():
            features = torch.cat([backbone(policy.input(policy.rows(x, slice(i, i + batch_size)))).float()
                                  for i in batches]).cpu()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features.numpy(), allow_pickle=False)
    return features
