"""The training loop over cached uint8 tensors: seeded, best-on-validation, one callback per epoch."""

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import random
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from catdog import CatdogError, distributed
from catdog.config import PRECISIONS
from catdog.io import atomic_path
from catdog.paths import FEATURE_CACHE, repo_root

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
# Adam as one fused kernel per step: PyTorch's default on the CPU loops over the parameters with five or six
# elementwise passes each, half of an `mlp` or `multitask` step (fused: 1.45-1.5x faster steps, benchmarks/
# RESULTS.md). Plain SGD is one add per parameter already. MPS is left to PyTorch's default.
FUSED = {"adam": ("cpu", "cuda")}
RESIDENT_SHARE = 0.25  # of a GPU's free memory the cached images may fill; the rest is the model's and activations'
# x86 flags of bf16 arithmetic in hardware: AVX512-BF16 (Cooper Lake, Zen 4 and later), AMX-BF16 (Sapphire Rapids
# and later). A CPU with AVX512-BW but neither still runs bf16 autocast, emulated by oneDNN and slower than float32,
# and torch.ops.mkldnn._is_mkldnn_bf16_supported() says yes to it: hence the flags themselves.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _progress(iterable, **kwargs) -> tqdm:
    """A progress bar in one process only, rank 0's: several processes would draw over each other's bars."""
    return tqdm(iterable, disable=True, **kwargs) if distributed.rank() > 0 else tqdm(iterable, **kwargs)


def seed_everything(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA start-up
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise CatdogError(f"train.device={name} but no {name} device is available; use auto or cpu")
    return torch.device(name)


@functools.cache  # once per process
def keep_freed_memory() -> None:
    """Make glibc keep freed memory for the next allocation instead of handing it back to the kernel. By default
    every block over 128 KiB (a batch, a layer's gradient, an optimizer's temporaries) is mapped afresh and unmapped
    again at each step, and every page of it faults on first touch: that doubled the time of a logistic-regression
    epoch and cost a third of a `deeper` or `multitask` step (benchmarks/RESULTS.md). Every block now comes from the
    heap, which keeps up to 1 GiB of freed memory for the next step. Elsewhere than glibc (macOS, musl) there is
    nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    libc.mallopt(m_mmap_max, 0)  # raising M_MMAP_THRESHOLD would not do: glibc caps it at 32 MiB
    libc.mallopt(m_trim_threshold, 2 ** 30)


def to_input(batch: torch.Tensor, device: torch.device, memory_format=torch.preserve_format) -> torch.Tensor:
    """uint8 images [0, 255] -> float [-1, 1], as the seeds normalised; float inputs (cached features) as they are.
    memory_format: channels-last for a convolutional model on CUDA (DevicePolicy)."""
    batch = batch.to(device, non_blocking=True, memory_format=memory_format)
    return batch.float().div_(127.5).sub_(1.0) if batch.dtype == torch.uint8 else batch


def augment(batch: torch.Tensor, generator: torch.Generator, crop_scale=(0.6, 1.0), crop_ratio=(3 / 4, 4 / 3),
            hflip=True) -> torch.Tensor:
    """Seeded random resized crop (area fraction in crop_scale, aspect ratio in crop_ratio) and horizontal flip
    of uint8 images, each image drawn on its own, as torchvision's RandomResizedCrop and RandomHorizontalFlip."""
    side = batch.shape[-1]
    out = torch.empty_like(batch)
    for i, image in enumerate(batch):
        area, log_ratio = torch.empty(2).uniform_(0, 1, generator=generator).tolist()
        area = crop_scale[0] + area * (crop_scale[1] - crop_scale[0])
        ratio = math.exp(math.log(crop_ratio[0]) + log_ratio * math.log(crop_ratio[1] / crop_ratio[0]))
        width = min(side, max(1, round(side * math.sqrt(area * ratio))))
        height = min(side, max(1, round(side * math.sqrt(area / ratio))))
        top = int(torch.randint(0, side - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, side - width + 1, (1,), generator=generator))
        crop = image[None, :, top:top + height, left:left + width].float()
        resized = nn.functional.interpolate(crop, size=(side, side), mode="bilinear", antialias=True)[0]
        if hflip and torch.rand(1, generator=generator).item() < 0.5:
            resized = resized.flip(-1)
        out[i] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


class Split(NamedTuple):
    """One split of the prepared data: uint8 images (N, 3, S, S), 0/1 labels, mean luminance in [0, 1]."""
    x: torch.Tensor
    y: torch.Tensor
    brightness: torch.Tensor


def as_tensors(x: np.ndarray, y: np.ndarray, brightness: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.float32)),
                 torch.from_numpy(np.asarray(brightness, dtype=np.float32)))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 in hardware (CPU_BF16_FLAGS, read by cpuinfo on any OS). ARM's bf16
    extension is not counted: bf16 autocast has not been measured on an ARM CPU here."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in CPU_BF16_FLAGS)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype of the forward passes for train.precision on this device; None: float32, no autocast.
    auto: on CUDA bf16 where the GPU has it natively, else fp16 (with a gradient scaler); on the CPU and MPS
    float32, so that the same params give the same metrics on every CPU, with bf16 hardware or without.
    bfloat16 and float16 are only taken where the hardware computes in them: emulated, they are slower than
    float32 (bf16 on GPUs before Ampere or CPUs without CPU_BF16_FLAGS; fp16 on any CPU)."""
    if precision not in PRECISIONS:
        raise CatdogError(f"train.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if precision == "float32":
        return None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "bfloat16" and not bf16:
            raise CatdogError("train.precision=bfloat16: this GPU has no native bf16 (Ampere or later); use "
                              "float16 or auto")
        if precision == "auto":
            return torch.bfloat16 if bf16 else torch.float16
        return getattr(torch, precision)
    if precision == "auto":
        return None
    if device.type == "cpu" and precision == "bfloat16":
        if not cpu_has_native_bf16():
            raise CatdogError("train.precision=bfloat16: this CPU has no native bf16 (avx512_bf16/amx_bf16); use "
                              "float32 or auto")
        return torch.bfloat16
    if precision == "float16":  # on the CPU, only a few recent ones have fp16 arithmetic (AVX512-FP16, AMX-FP16)
        raise CatdogError(f"train.precision=float16 runs on CUDA only, not on {device.type}; use float32 or auto")
    raise CatdogError(f"train.precision=bfloat16 runs on CUDA and the CPU only, not on {device.type}; use float32 "
                      "or auto")


class DevicePolicy:
    """Where the devices differ, in one place. Mixed precision as train.precision says (autocast_dtype): by
    default on CUDA only, bf16 where the GPU has it, else fp16 with a gradient scaler. On CUDA the cached images
    either resident on the GPU or gathered batch by batch into pinned memory and copied without blocking. On CUDA
    and the CPU: channels-last weights and inputs for convolutional models, the layout cuDNN's and oneDNN's fastest
    convolutions use (on the CPU: cnn steps 1.45x, mobilenet_v2_finetune 1.3x faster, benchmarks/RESULTS.md). The
    CPU trains from host memory; MPS as PyTorch's defaults. A NumPy model computes in float32 whatever the param."""

    def __init__(self, device, model=None, precision: str = "auto"):
        keep_freed_memory()
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        numpy_model = model is not None and not isinstance(model, nn.Module)
        self.amp_dtype = None if numpy_model else autocast_dtype(self.device, precision)
        convolutional = isinstance(model, nn.Module) and any(isinstance(m, nn.Conv2d) for m in model.modules())
        channels_last = convolutional and self.device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    @property
    def precision(self) -> str:
        return "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    def autocast(self):
        """Forward passes in the mixed-precision dtype; losses and metrics are computed after it, in float32."""
        return torch.autocast(self.device.type, self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none. A disabled
        scaler passes the loss and the optimizer step through unchanged."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def place(self, model):
        """The model on the device, channels-last if convolutional (CUDA, CPU); a NumPy model stays where it is."""
        return model.to(self.device, memory_format=self.memory_format) if isinstance(model, nn.Module) else model

    def keep(self, *splits: Split, resident: bool | None = None) -> tuple[Split, ...]:
        """The splits to gather batches from. On CUDA they move to the GPU once when resident (by default when they
        fill under RESIDENT_SHARE of its free memory), so that no batch crosses the host link again."""
        if not self.cuda:
            return splits
        if resident is None:
            free, _ = torch.cuda.mem_get_info(self.device)
            resident = sum(t.nbytes for split in splits for t in split) < RESIDENT_SHARE * free
        return tuple(Split(*(t.to(self.device) for t in split)) for split in splits) if resident else splits

    def rows(self, tensor: torch.Tensor, index) -> torch.Tensor:
        """tensor[index] on the device. Rows going from host memory to a GPU are gathered into pinned memory first:
        only a copy from pinned memory runs asynchronously (PyTorch's pinned-memory cache holds the buffer until
        the copy is done). index_select, not tensor[index]: five times faster for rows of images on the CPU."""
        rows = tensor.index_select(0, index) if isinstance(index, torch.Tensor) else tensor[index]
        if self.cuda and not rows.is_cuda:
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=self.cuda)

    def batch(self, split: Split, index) -> Split:
        return Split(*(self.rows(t, index) for t in split))

    def input(self, images: torch.Tensor) -> torch.Tensor:
        return to_input(images, self.device, self.memory_format)


def make_optimizer(model: nn.Module, cfg: dict, device) -> torch.optim.Optimizer:
    """cfg's optimizer over the model's trainable parameters, as one fused kernel where FUSED has it."""
    fused = {"fused": True} if torch.device(device).type in FUSED.get(cfg["optimizer"], ()) else {}
    return OPTIMIZERS[cfg["optimizer"]]([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"], **fused)


def batch_rows(batch_size, n: int) -> int:
    return n if batch_size == "full" else batch_size


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size, device: torch.device, precision: str = "auto") -> torch.Tensor:
    """Model outputs (N, k) for every row of x, in order: column 0 the class logit, column 1 the brightness; in
    float32 on the CPU, whatever precision (train.precision) the forward passes ran in."""
    policy = DevicePolicy(device, model, precision)
    policy.place(model).eval()
    step = batch_rows(batch_size, len(x))
    with policy.autocast():
        outputs = [model(policy.input(policy.rows(x, slice(i, i + step)))) for i in range(0, len(x), step)]
    return torch.cat(outputs).float().cpu()


def losses(outputs: torch.Tensor, y: torch.Tensor, brightness: torch.Tensor, cfg: dict) -> dict:
    """The batch's named losses; `loss` is the one optimised. A multi-task model (two output columns) is trained
    on `loss_weights.classification * BCE + loss_weights.brightness * MSE`."""
    bce = nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], y)
    if outputs.shape[1] == 1:
        return {"loss": bce}
    mse = nn.functional.mse_loss(outputs[:, 1], brightness)
    weights = cfg["loss_weights"]
    return {"loss": weights["classification"] * bce + weights["brightness"] * mse, "class_loss": bce,
            "brightness_loss": mse}


def score(outputs: torch.Tensor, split: Split, cfg: dict) -> dict:
    """Mean losses and accuracy (class probability thresholded at 0.5) of outputs on a whole split."""
    named = {k: v.item() for k, v in losses(outputs, split.y, split.brightness, cfg).items()}
    return {**named, "accuracy": ((outputs[:, 0] > 0).float() == split.y).sum().item() / len(split.y)}


class History:
    """Per-epoch rows, the callback, and the model state of the best validation accuracy (the first epoch wins a
    tie: fewer epochs, same accuracy)."""

    def __init__(self, on_epoch):
        self.rows, self.best_state, self.best_epoch, self.on_epoch = [], None, 0, on_epoch

    def add(self, epoch: int, train: dict, val: dict, model) -> None:
        row = {"epoch": epoch, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
               "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        row.update({f"train_{k}": v for k, v in train.items() if k not in ("loss", "accuracy")})
        row.update({f"val_{k}": v for k, v in val.items() if k not in ("loss", "accuracy")})
        self.rows.append(row)
        self.on_epoch(row)
        if not self.best_epoch or row["val_accuracy"] > self.rows[self.best_epoch - 1]["val_accuracy"]:
            self.best_epoch = epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def fit(model, cfg: dict, train: Split, val: Split, device, seed: int, on_epoch=lambda row: None,
        cache_features: bool = True, precision: str = "auto", resident: bool | None = None,
        inference: str = "auto") -> History:
    """Train for cfg['epochs'] and return the History. A model that is not a torch module (the NumPy network)
    trains itself through its own `fit` with the same arguments and History. cache_features=False runs a frozen
    backbone on every batch (the naive loop, for benchmarks/frozen_features.py). precision: train.precision, for
    the training and validation forward passes (autocast_dtype). On CUDA, resident=True/False puts the images on
    the GPU or leaves them in host memory (default: on the GPU when they fit), for benchmarks/gpu.py. Under
    torchrun each process trains on its part of every batch. inference: train.inference, the engine of the frozen
    backbone's feature pass (onnx_engine.engine_for)."""
    history = History(on_epoch)
    if not isinstance(model, nn.Module):
        if distributed.size() > 1:
            raise CatdogError("a NumPy model (arch numpy) trains in one process: run it without torchrun")
        model.fit(cfg, train, val, seed, history)
        return history
    policy = DevicePolicy(device, model, precision)
    policy.place(model)
    if cache_features and getattr(model, "frozen", False) and not cfg.get("augment"):
        return _fit_head_on_features(model, cfg, train, val, policy.device, seed, on_epoch, precision, resident,
                                     inference)
    train_rows, val_rows = policy.keep(train, val, resident=resident)
    network = distributed.wrap(model, policy.device)
    optimizer = make_optimizer(model, cfg, policy.device)
    scaler = policy.scaler()
    order = torch.Generator().manual_seed(seed)  # batch order depends on the seed alone, not on the device
    augmentation = torch.Generator().manual_seed(seed + 1 + distributed.rank())  # each process its own crops
    step = batch_rows(cfg["batch_size"], len(train.x))
    epochs = _progress(range(1, cfg["epochs"] + 1), desc="epochs", unit="epoch")
    for epoch in epochs:
        network.train()
        batch_losses, counts, correct = [], [], []  # left on the device until the epoch ends: no sync per batch
        permutation = torch.randperm(len(train.x), generator=order).to(train_rows.x.device)
        for i in _progress(range(0, len(train.x), step), desc=f"epoch {epoch}", unit="batch", leave=False):
            batch_index = permutation[i:i + step]
            index, n = distributed.shard(batch_index)  # in one process: the whole batch
            images, y, brightness = policy.batch(train_rows, index)
            if cfg.get("augment"):
                images = augment(images, augmentation, **cfg["augment"])
            with policy.autocast():
                outputs = network(policy.input(images))
            outputs = outputs.float()  # losses and metrics in float32, whatever precision the forward pass ran in
            batch = losses(outputs, y, brightness, cfg)
            optimizer.zero_grad(set_to_none=True)
            # This process's mean loss weighted by its share of the batch (exactly 1 in one process): DDP averages
            # the processes' gradients, so the step is the one of the whole batch's mean loss.
            share = n * distributed.size() / len(batch_index)
            scaler.scale(batch["loss"] * share).backward()
            scaler.step(optimizer)
            scaler.update()
            batch_losses.append(torch.stack(list(batch.values())).detach())
            counts.append(n)
            correct.append(((outputs[:n, 0].detach() > 0).float() == y[:n]).sum())
        train_scores = _epoch_scores(list(batch), batch_losses, counts, correct, len(train.x), policy.device)
        val_scores = score(predict(model, val_rows.x, cfg["batch_size"], policy.device, precision), val, cfg)
        history.add(epoch, train_scores, val_scores, model)
        epochs.set_postfix(loss=f"{train_scores['loss']:.4f}", val_acc=f"{history.rows[-1]['val_accuracy']:.3f}")
    return history


def _epoch_scores(names, batch_losses, counts, correct, n_images: int, device) -> dict:
    """Mean losses and accuracy over the epoch's training images, summed over the processes. The losses are summed
    in float64 in batch order, as Python floats, which keeps the CPU history byte-identical to a sum per batch."""
    sums = dict.fromkeys(names, 0.0)
    for values, n in zip(torch.stack(batch_losses).tolist(), counts):  # one copy from the device per epoch
        for name, value in zip(names, values):
            sums[name] += value * n
    *totals, n_correct = distributed.all_sum([*sums.values(), torch.stack(correct).sum().item()], device)
    return {name: total / n_images for name, total in zip(names, totals)} | {"accuracy": n_correct / n_images}


def _fit_head_on_features(model, cfg, train: Split, val: Split, device, seed: int, on_epoch, precision, resident,
                          inference="auto"):
    """A frozen backbone gives the same features every epoch: compute them once (cached on disk, keyed by the
    weights and the images) and train the head alone on them; the History still holds the whole model's state.
    Under torchrun every process computes the features (or reads them from the shared cache)."""
    train_features, val_features = (Split(backbone_features(model.backbone, split.x, device, precision=precision,
                                                            inference=inference),
                                          split.y, split.brightness) for split in (train, val))
    history = fit(model.head, cfg, train_features, val_features, device, seed, on_epoch, precision=precision,
                  resident=resident)
    backbone = {f"backbone.{k}": v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    history.best_state = {**backbone, **{f"head.{k}": v for k, v in history.best_state.items()}}
    return history


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def feature_cache_path(backbone: nn.Module, x: torch.Tensor, policy: DevicePolicy, engine: str = "torch") -> Path:
    """Where backbone_features keeps the features of x: the repository's cache, shared by queued experiments.
    engine: 'torch' or 'onnxruntime' (onnx_engine.engine_for), whose kernels round differently."""
    key = _digest(*(v.cpu().numpy() for v in backbone.state_dict().values()), x.numpy())
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
    its own (onnx_engine, .cache/onnx)."""
    from catdog import onnx_engine  # late: it imports this module

    policy = DevicePolicy(device, backbone, precision)
    engine = onnx_engine.engine_for(inference, backbone, policy.device, precision, backbone=True)
    path = feature_cache_path(backbone, x, policy, engine)
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    batches = _progress(range(0, len(x), batch_size), desc="backbone features", unit="batch")
    if engine == "onnxruntime":
        run = onnx_engine.runner(backbone, x.shape[-1], policy.device, precision, engine, backbone=True)
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
