"""The training loop over cached uint8 tensors: seeded, best-on-validation, one callback per epoch."""

import hashlib
import math
import os
import random
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from catdog import CatdogError
from catdog.io import atomic_path
from catdog.paths import FEATURE_CACHE, repo_root

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


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


def to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images [0, 255] -> float [-1, 1], as the seeds normalised; float inputs (cached features) as they are."""
    batch = batch.to(device, non_blocking=True)
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


def batch_rows(batch_size, n: int) -> int:
    return n if batch_size == "full" else batch_size


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size, device: torch.device) -> torch.Tensor:
    """Model outputs (N, k) for every row of x, in order: column 0 the class logit, column 1 the brightness."""
    model.eval()
    step = batch_rows(batch_size, len(x))
    return torch.cat([model(to_input(x[i:i + step], device)).float().cpu() for i in range(0, len(x), step)])


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
        cache_features: bool = True) -> History:
    """Train for cfg['epochs'] and return the History. A model that is not a torch module (the NumPy network)
    trains itself through its own `fit` with the same arguments and History. cache_features=False runs a frozen
    backbone on every batch (the naive loop, for benchmarks/frozen_features.py)."""
    history = History(on_epoch)
    if not isinstance(model, nn.Module):
        model.fit(cfg, train, val, seed, history)
        return history
    model.to(device)
    if cache_features and getattr(model, "frozen", False) and not cfg.get("augment"):
        return _fit_head_on_features(model, cfg, train, val, device, seed, on_epoch)
    optimizer = OPTIMIZERS[cfg["optimizer"]]([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
    order = torch.Generator().manual_seed(seed)  # batch order depends on the seed alone, not on the device
    augmentation = torch.Generator().manual_seed(seed + 1)
    step = batch_rows(cfg["batch_size"], len(train.x))
    epochs = tqdm(range(1, cfg["epochs"] + 1), desc="epochs", unit="epoch")
    for epoch in epochs:
        model.train()
        sums, correct = {}, 0
        permutation = torch.randperm(len(train.x), generator=order)
        for i in tqdm(range(0, len(train.x), step), desc=f"epoch {epoch}", unit="batch", leave=False):
            index = permutation[i:i + step]
            images = train.x[index]
            if cfg.get("augment"):
                images = augment(images, augmentation, **cfg["augment"])
            outputs = model(to_input(images, device))
            y = train.y[index].to(device)
            batch = losses(outputs, y, train.brightness[index].to(device), cfg)
            optimizer.zero_grad(set_to_none=True)
            batch["loss"].backward()
            optimizer.step()
            for name, value in batch.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(index)
            correct += ((outputs[:, 0].detach() > 0).float() == y).sum().item()
        train_scores = {k: v / len(train.x) for k, v in sums.items()} | {"accuracy": correct / len(train.x)}
        history.add(epoch, train_scores, score(predict(model, val.x, cfg["batch_size"], device), val, cfg), model)
        epochs.set_postfix(loss=f"{train_scores['loss']:.4f}", val_acc=f"{history.rows[-1]['val_accuracy']:.3f}")
    return history


def _fit_head_on_features(model, cfg, train: Split, val: Split, device, seed: int, on_epoch) -> History:
    """A frozen backbone gives the same features every epoch: compute them once (cached on disk, keyed by the
    weights and the images) and train the head alone on them; the History still holds the whole model's state."""
    train_features, val_features = (Split(backbone_features(model.backbone, split.x, device), split.y,
                                          split.brightness) for split in (train, val))
    history = fit(model.head, cfg, train_features, val_features, device, seed, on_epoch)
    backbone = {f"backbone.{k}": v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    history.best_state = {**backbone, **{f"head.{k}": v for k, v in history.best_state.items()}}
    return history


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


@torch.no_grad()
def backbone_features(backbone: nn.Module, x: torch.Tensor, device, batch_size: int = 64) -> torch.Tensor:
    """The backbone's features of every image, computed once per (weights, images) and then read from disk."""
    key = _digest(*(v.cpu().numpy() for v in backbone.state_dict().values()), x.numpy())
    path = repo_root() / FEATURE_CACHE / f"{key}.npy"  # the repository's cache, shared by queued experiments
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    backbone.to(device).eval()
    features = torch.cat([backbone(to_input(x[i:i + batch_size], device)).float().cpu()
                          for i in tqdm(range(0, len(x), batch_size), desc="backbone features", unit="batch")])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features.numpy(), allow_pickle=False)
    return features
