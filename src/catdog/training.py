"""The training loop over cached uint8 tensors: seeded, best-on-validation, one callback per epoch."""

import copy
import os
import random

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


def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.float32))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits for every row of x, in order."""
    model.eval()
    return torch.cat([model(to_input(x[i:i + batch_size], device)).squeeze(1).float().cpu()
                      for i in range(0, len(x), batch_size)])


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean BCE loss, accuracy with the probability thresholded at 0.5)."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y).item()
    return loss, ((logits > 0).float() == y).sum().item() / len(y)


def fit(model, cfg, train, val, device, seed, on_epoch=lambda row: None):
    """Train for cfg['epochs']; return (history rows, state_dict of the best validation accuracy, its epoch)."""
    x_train, y_train = train
    x_val, y_val = val
    model.to(device)
    optimizer = OPTIMIZERS[cfg["optimizer"]](model.parameters(), lr=cfg["lr"])
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.Generator().manual_seed(seed)  # batch order depends on the seed alone, not on the device
    history, best_state, best_epoch, best_accuracy = [], None, 0, -1.0
    batch_size = cfg["batch_size"]
    epochs = tqdm(range(1, cfg["epochs"] + 1), desc="epochs", unit="epoch")
    for epoch in epochs:
        model.train()
        loss_sum, correct = 0.0, 0
        permutation = torch.randperm(len(x_train), generator=order)
        for i in tqdm(range(0, len(x_train), batch_size), desc=f"epoch {epoch}", unit="batch", leave=False):
            index = permutation[i:i + batch_size]
            xb, yb = to_input(x_train[index], device), y_train[index].to(device)
            logits = model(xb).squeeze(1)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += ((logits.detach() > 0).float() == yb).sum().item()
        val_loss, val_accuracy = score(predict(model, x_val, batch_size, device), y_val)
        row = {"epoch": epoch, "train_loss": loss_sum / len(x_train), "train_accuracy": correct / len(x_train),
               "val_loss": val_loss, "val_accuracy": val_accuracy}
        history.append(row)
        on_epoch(row)
        if val_accuracy > best_accuracy:  # the first epoch wins a tie: fewer epochs, same accuracy
            best_accuracy, best_epoch = val_accuracy, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        epochs.set_postfix(loss=f"{row['train_loss']:.4f}", val_acc=f"{val_accuracy:.3f}")
    return history, best_state, best_epoch
