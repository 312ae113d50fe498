"""The course's L-layer fully connected network in plain NumPy: forward and backward propagation by hand.

This is the "build it yourself" counterpart of `models.fully_connected` (course 1, week 4; course 2, week 1):
no autograd, no torch. It follows the course's conventions so the code reads like the notebooks:

  * data is column-major: X has shape (n_features, m), Y has shape (1, m), one column per sample;
  * layer l has W{l} of shape (n_l, n_{l-1}) and b{l} of shape (n_l, 1);
  * `init="he"` scales N(0, 1) weights by sqrt(2 / fan_in); `init="small"` is the course's naive N(0, 1) * 0.01,
    kept on purpose: in a deep ReLU net its activations shrink layer by layer, the output sits at sigmoid(~0) = 0.5
    and the cost stalls at -log(0.5) = 0.693 -- the lesson of the initialisation exercise.

Unlike the notebooks, the cost is numerically stable: with a sigmoid output it is computed from the logits Z_L, and
dZ_L = A_L - Y is used directly instead of dividing by A_L and 1 - A_L, so saturated outputs never produce log(0)
or 0/0.
"""
from __future__ import annotations

import numpy as np

ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = ("he", "small")
EPS = 1e-12  # clip for the cross-entropy of a non-sigmoid output layer, where no logits exist


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # equal to 1 / (1 + exp(-z)), without overflow warnings for z << 0


def _activate(name: str, z):
    if name == "relu":
        return np.maximum(z, 0)
    return np.tanh(z) if name == "tanh" else _sigmoid(z)


def _activation_grad(name: str, z, a):
    """dA/dZ, from the cached Z and A (tanh and sigmoid derivatives are cheapest in terms of A)."""
    if name == "relu":
        return (z > 0).astype(z.dtype)
    return 1.0 - a * a if name == "tanh" else a * (1.0 - a)


class NumpyNet:
    """An L-layer network: `layer_dims[0]` inputs, then one layer per entry of `activations`."""

    def __init__(self, layer_dims: list[int], activations: list[str], init: str = "he", seed: int = 0,
                 dtype=np.float64):
        layer_dims, activations = list(layer_dims), list(activations)
        if len(layer_dims) < 2:
            raise ValueError(f"layer_dims needs the input size and at least one layer, got {layer_dims}")
        if any(int(n) != n or n < 1 for n in layer_dims):
            raise ValueError(f"layer_dims must be positive integers, got {layer_dims}")
        if len(activations) != len(layer_dims) - 1:
            raise ValueError(f"activations has {len(activations)} entries but layer_dims {layer_dims} has "
                             f"{len(layer_dims) - 1} layers after the input: give one activation per layer")
        for name in activations:
            if name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}: choose from {', '.join(ACTIVATIONS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose from {', '.join(INITS)}")
        self.layer_dims, self.activations, self.init = [int(n) for n in layer_dims], activations, init
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        for l in range(1, len(self.layer_dims)):
            fan_in, fan_out = self.layer_dims[l - 1], self.layer_dims[l]
            scale = np.sqrt(2.0 / fan_in) if init == "he" else 0.01
            self.params[f"W{l}"] = (rng.standard_normal((fan_out, fan_in)) * scale).astype(self.dtype)
            self.params[f"b{l}"] = np.zeros((fan_out, 1), dtype=self.dtype)

    @property
    def n_layers(self) -> int:
        return len(self.activations)

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[0] != self.layer_dims[0]:
            raise ValueError(f"X must have shape ({self.layer_dims[0]}, m) (one column per sample), got {X.shape}")
        return X

    def forward(self, X):
        """Returns (A_L, caches); caches[l - 1] = (A_{l-1}, Z_l, A_l), all backward and the stable cost need."""
        A, caches = self._check_X(X), []
        for l, name in enumerate(self.activations, start=1):
            Z = self.params[f"W{l}"] @ A + self.params[f"b{l}"]
            A_next = _activate(name, Z)
            caches.append((A, Z, A_next))
            A = A_next
        return A, caches

    def cost(self, AL, Y, caches=None) -> float:
        """Mean binary cross-entropy. With a sigmoid output and the caches of `forward`, it is computed from the
        logits Z_L as max(Z, 0) - Z * Y + log1p(exp(-|Z|)), finite for any Z; otherwise from A_L clipped to
        [EPS, 1 - EPS]."""
        Y = np.asarray(Y, dtype=self.dtype).reshape(1, -1)
        if self.activations[-1] == "sigmoid" and caches is not None:
            Z = caches[-1][1]
            return float(np.mean(np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))))
        A = np.clip(AL, EPS, 1 - EPS)
        return float(-np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A)))

    def backward(self, caches, Y) -> dict[str, np.ndarray]:
        """Gradients of `cost` with respect to every parameter, vectorised over samples (one loop over layers)."""
        Y = np.asarray(Y, dtype=self.dtype).reshape(1, -1)
        m, grads = Y.shape[1], {}
        AL = caches[-1][2]
        if self.activations[-1] == "sigmoid":
            dZ = (AL - Y) / m  # d cost / d Z_L, sigmoid and cross-entropy cancel: no division by A_L or 1 - A_L
        else:
            A = np.clip(AL, EPS, 1 - EPS)
            dA = (-(Y / A) + (1 - Y) / (1 - A)) / m * ((AL > EPS) & (AL < 1 - EPS))  # clipped: flat there
            dZ = dA * _activation_grad(self.activations[-1], caches[-1][1], AL)
        for l in range(self.n_layers, 0, -1):
            A_prev, _, _ = caches[l - 1]
            grads[f"dW{l}"] = dZ @ A_prev.T
            grads[f"db{l}"] = dZ.sum(axis=1, keepdims=True)
            if l > 1:  # dA_{l-1}, then through the previous layer's activation
                _, Z_prev, A_prev_out = caches[l - 2]
                dZ = (self.params[f"W{l}"].T @ dZ) * _activation_grad(self.activations[l - 2], Z_prev, A_prev_out)
        return grads

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """Plain gradient descent, in place."""
        for key, value in self.params.items():
            value -= lr * grads[f"d{key}"]

    def fit(self, X, Y, lr: float, iterations: int, batch_size: int | None = None, seed: int = 0,
            on_iteration=None) -> list[float]:
        """Gradient descent. `batch_size=None`: full batch, `iterations` is the number of steps and each cost is the
        cost before that step. Otherwise `iterations` is the number of epochs, each over the samples reshuffled with
        `np.random.default_rng(seed)`, and each cost is the epoch's sample-weighted mean mini-batch cost.
        `on_iteration(i, cost, accuracy)` is called after every step (full batch) or epoch, with the accuracy of the
        predictions made during it (probability > 0.5). Returns the list of costs."""
        X = self._check_X(X)
        Y = np.asarray(Y, dtype=self.dtype).reshape(1, -1)
        m = X.shape[1]
        if Y.shape[1] != m:
            raise ValueError(f"X has {m} samples but Y has {Y.shape[1]}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {batch_size}")
        rng, costs = np.random.default_rng(seed), []
        for i in range(iterations):
            if batch_size is None:
                batches = [np.arange(m)]
            else:
                order = rng.permutation(m)
                batches = [order[k:k + batch_size] for k in range(0, m, batch_size)]
            total, correct = 0.0, 0
            for idx in batches:
                Xb, Yb = (X, Y) if batch_size is None else (X[:, idx], Y[:, idx])
                AL, caches = self.forward(Xb)
                total += self.cost(AL, Yb, caches) * len(idx)
                correct += int(((AL > 0.5) == (Yb > 0.5)).sum())
                self.step(self.backward(caches, Yb), lr)
            costs.append(total / m)
            if on_iteration is not None:
                on_iteration(i, costs[-1], correct / m)
        return costs

    def predict_proba(self, X) -> np.ndarray:
        """P(class 1) for each column of X, shape (m,)."""
        return self.forward(X)[0].reshape(-1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters as plain arrays: `np.savez(path, **net.state_dict())` needs no pickle."""
        return {key: value.copy() for key, value in self.params.items()}

    def load_state_dict(self, state) -> None:
        """Loads parameters saved by `state_dict` (a dict or an `np.load` archive); keys and shapes must match."""
        keys = set(state.keys()) if hasattr(state, "keys") else set(state)
        if keys != set(self.params):
            raise ValueError(f"state has keys {sorted(keys)}, this network needs {sorted(self.params)}")
        for key, value in self.params.items():
            new = np.asarray(state[key], dtype=self.dtype)
            if new.shape != value.shape:
                raise ValueError(f"{key} has shape {new.shape} in the state, this network needs {value.shape}")
            self.params[key] = new.copy()
