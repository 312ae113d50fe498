"""The training loop over cached uint8 tensors: seeded, best-on-validation, one callback per epoch."""

import math
import os
import random

import numpy as np
import torch
from torch import nn

from catdog import CatdogError
from catdog.config import OPTIMIZERS
from catdog.data.tensors import Split, batch_rows, to_input
from catdog.device import DevicePolicy
from catdog.inference.forward import predict
from catdog.training import distributed, features

# Adam as one fused kernel per step: PyTorch's default on the CPU loops over the parameters with five or six
# elementwise passes each, half of an `mlp` or `multitask` step (fused: 1.45-1.5x faster steps, benchmarks/
# RESULTS.md). Plain SGD is one add per parameter already. MPS is left to PyTorch's default.
FUSED = {"adam": ("cpu", "cuda")}


def seed_everything(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA start-up
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


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


def make_optimizer(model: nn.Module, cfg: dict, device) -> torch.optim.Optimizer:
    """cfg's optimizer over the model's trainable parameters (weight_decay: its L2 penalty), as one fused kernel
    where FUSED has it."""
    fused = {"fused": True} if torch.device(device).type in FUSED.get(cfg["optimizer"], ()) else {}
    optimizer = getattr(torch.optim, OPTIMIZERS[cfg["optimizer"]])
    return optimizer([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"],
                     weight_decay=cfg.get("weight_decay", 0.0), **fused)


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
        precision: str = "auto", inference: str = "auto") -> History:
    """Train for cfg['epochs'] and return the History. A frozen backbone's features are computed once and the head
    trained on them (features.cacheable). The NumPy network trains itself (NumpyModel.fit), scored here after each
    iteration. precision: train.precision, for the training and validation forward passes (autocast_dtype). Under
    torchrun each process trains on its part of every batch. inference: train.inference, the engine of the frozen
    backbone's feature pass (inference.forward.engine_for)."""
    history = History(on_epoch)
    if not isinstance(model, nn.Module):
        if distributed.size() > 1:
            raise CatdogError("a NumPy model (arch numpy) trains in one process: run it without torchrun")
        _fit_numpy(model, cfg, train, val, seed, history)
        return history
    policy = DevicePolicy(device, model, precision)
    policy.place(model)
    if features.cacheable(model, cfg):
        return _fit_head_on_features(model, cfg, train, val, policy.device, seed, on_epoch, precision, inference)
    train_rows, val_rows = policy.keep(train, val)
    network = distributed.wrap(model, policy.device)
    optimizer = make_optimizer(model, cfg, policy.device)
    scaler = policy.scaler()
    order = torch.Generator().manual_seed(seed)  # batch order depends on the seed alone, not on the device
    augmentation = torch.Generator().manual_seed(seed + 1 + distributed.rank())  # each process its own crops
    step = batch_rows(cfg["batch_size"], len(train.x))
    epochs = distributed.progress(range(1, cfg["epochs"] + 1), desc="epochs", unit="epoch")
    for epoch in epochs:
        network.train()
        batch_losses, counts, correct = [], [], []  # left on the device until the epoch ends: no sync per batch
        permutation = torch.randperm(len(train.x), generator=order).to(train_rows.x.device)
        for i in distributed.progress(range(0, len(train.x), step), desc=f"epoch {epoch}", unit="batch", leave=False):
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


def _fit_head_on_features(model, cfg, train: Split, val: Split, device, seed: int, on_epoch, precision, inference):
    """A frozen backbone gives the same features every epoch: compute them once (cached on disk, keyed by the
    weights and the images) and train the head alone on them; the History still holds the whole model's state.
    Under torchrun every process computes the features (or reads them from the shared cache)."""
    train_features, val_features = (Split(features.backbone_features(model.backbone, split.x, device,
                                                                     precision=precision, inference=inference),
                                          split.y, split.brightness) for split in (train, val))
    history = fit(model.head, cfg, train_features, val_features, device, seed, on_epoch, precision=precision)
    backbone = {f"backbone.{k}": v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    history.best_state = {**backbone, **{f"head.{k}": v for k, v in history.best_state.items()}}
    return history


def _fit_numpy(model, cfg: dict, train: Split, val: Split, seed: int, history: History) -> None:
    """The NumPy network's own gradient descent (NumpyModel.fit), its validation scored after every iteration."""
    val_x = to_input(val.x, torch.device("cpu"))
    progress = distributed.progress(total=cfg["epochs"], desc="iterations", unit="it")

    def after_iteration(i, cost, accuracy):
        val_scores = score(model(val_x), val, cfg)
        history.add(i + 1, {"loss": cost, "accuracy": accuracy}, val_scores, model)
        progress.update()
        progress.set_postfix(cost=f"{cost:.4f}", val_acc=f"{val_scores['accuracy']:.3f}")

    model.fit(cfg, train, seed, after_iteration)
    progress.close()
