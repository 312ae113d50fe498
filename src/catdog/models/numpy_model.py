"""The hand-written NumPy network (numpy_net.py) as a pipeline model: built from a `models` entry, trained on the
cached tensors (training.loop scores it), evaluated and saved like the torch models."""

import numpy as np
import torch

from catdog.data.tensors import Split, to_input
from catdog.models.numpy_net import NumpyNet


class NumpyModel:
    """The few methods of a torch module that the stages call, backed by a NumpyNet with no torch inside.

    Tensors only cross the boundary: images come in as torch tensors and logits go out as one."""

    def __init__(self, cfg: dict):
        side = cfg["input_size"]
        # Its own generator, drawn from the global one that seed_everything seeded: reproducible per `seed`.
        self.net = NumpyNet([3 * side * side, *cfg["hidden"], 1], cfg["activations"], init=cfg.get("init", "he"),
                            seed=int(np.random.randint(2**31)), dtype=np.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Float images (N, 3, S, S) in [-1, 1] -> logits (N, 1), the last layer's pre-activation."""
        _, caches = self.net.forward(self._columns(x))
        return torch.from_numpy(caches[-1][1].T.copy())

    @staticmethod
    def _columns(x: torch.Tensor) -> np.ndarray:
        return x.cpu().reshape(len(x), -1).numpy().T  # the course's layout: one column per image

    def fit(self, cfg: dict, train: Split, seed: int, after_iteration) -> None:
        """Gradient descent for cfg['epochs'] iterations (passes over the data), full batch or mini-batch;
        after_iteration(i, cost, accuracy) after each (training.loop scores the validation split there)."""
        x = self._columns(to_input(train.x, torch.device("cpu")))
        batch_size = None if cfg["batch_size"] == "full" else cfg["batch_size"]
        # torch only scores the validation outputs in after_iteration, too few for its threads to share; awake, they
        # would spin against OpenBLAS's on the same cores (measured: 10 ms more per iteration on 2 cores)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.net.fit(x, train.y.numpy()[None, :], lr=cfg["lr"], iterations=cfg["epochs"], batch_size=batch_size,
                         seed=seed, on_iteration=after_iteration)
        finally:
            torch.set_num_threads(threads)

    def state_dict(self) -> dict:
        return {k: torch.from_numpy(v.copy()) for k, v in self.net.params.items()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict({k: v.numpy() for k, v in state.items()})

    def parameters(self):
        return [torch.from_numpy(v) for v in self.net.params.values()]

    def to(self, device):
        return self  # NumPy runs on the CPU whatever train.device says

    def eval(self):
        return self
