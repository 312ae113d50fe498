"""The training loop over cached uint8 tensors: seeded, best-on-validation, one callback per epoch."""

import os
import random
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from catdog import CatdogError

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
    """uint8 [0, 255] -> float [-1, 1], as the seeds normalised."""
    return batch.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)


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


def fit(model, cfg: dict, train: Split, val: Split, device, seed: int, on_epoch=lambda row: None) -> History:
    """Train for cfg['epochs'] and return the History. A model that is not a torch module (the NumPy network)
    trains itself through its own `fit` with the same arguments and History."""
    history = History(on_epoch)
    if not isinstance(model, nn.Module):
        model.fit(cfg, train, val, seed, history)
        return history
    model.to(device)
    optimizer = OPTIMIZERS[cfg["optimizer"]](model.parameters(), lr=cfg["lr"])
    order = torch.Generator().manual_seed(seed)  # batch order depends on the seed alone, not on the device
    step = batch_rows(cfg["batch_size"], len(train.x))
    epochs = tqdm(range(1, cfg["epochs"] + 1), desc="epochs", unit="epoch")
    for epoch in epochs:
        model.train()
        sums, correct = {}, 0
        permutation = torch.randperm(len(train.x), generator=order)
        for i in tqdm(range(0, len(train.x), step), desc=f"epoch {epoch}", unit="batch", leave=False):
            index = permutation[i:i + step]
            outputs = model(to_input(train.x[index], device))
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
