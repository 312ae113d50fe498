"""Tests of the hand-written NumPy network: gradients (finite differences and torch autograd), a stable cost,
learning, the course's initialisation lesson, determinism and argument checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catdog.models.numpy_net import NumpyNet

HIDDEN = ["relu", "tanh", "sigmoid"]
LN2 = float(np.log(2.0))


def rel_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))


def small_problem(hidden: str, seed: int = 3):
    """A [4, 5, 3, 1] net and 6 samples; for ReLU, asserts no pre-activation is near its kink at 0, where a
    finite difference would straddle the kink and the check would mean nothing."""
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(4, 6)), (rng.random((1, 6)) > 0.5).astype(float)
    net = NumpyNet([4, 5, 3, 1], [hidden, hidden, "sigmoid"], seed=seed)
    for l in (1, 2, 3):  # non-zero biases, so their gradients are exercised away from the initial point
        net.params[f"b{l}"] = rng.normal(scale=0.5, size=net.params[f"b{l}"].shape)
    if hidden == "relu":
        _, caches = net.forward(X)
        assert min(np.abs(Z).min() for _, Z, _ in caches[:-1]) > 1e-3
    return net, X, Y


def loss(net, X, Y) -> float:
    AL, caches = net.forward(X)
    return net.cost(AL, Y, caches)


def numeric_grads(net, X, Y, eps=1e-6) -> dict:
    grads = {}
    for key, p in net.params.items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            plus = loss(net, X, Y)
            p[idx] = old - eps
            minus = loss(net, X, Y)
            p[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads[f"d{key}"] = g
    return grads


def flat(grads: dict) -> np.ndarray:
    return np.concatenate([grads[k].ravel() for k in sorted(grads)])


@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_match_finite_differences(hidden):
    net, X, Y = small_problem(hidden)
    _, caches = net.forward(X)
    grads = net.backward(caches, Y)
    assert set(grads) == {f"d{k}" for k in net.params}
    assert all(grads[f"d{k}"].shape == v.shape for k, v in net.params.items())
    assert rel_error(flat(grads), flat(numeric_grads(net, X, Y))) < 1e-6


def torch_forward(net: NumpyNet, X):
    """The same network in torch float64: returns the logits Z_L and the parameter tensors."""
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.params.items()}
    A = torch.tensor(X, dtype=torch.float64)
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
    for l, name in enumerate(net.activations, start=1):
        Z = params[f"W{l}"] @ A + params[f"b{l}"]
        A = act[name](Z)
    return Z, params


@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_and_cost_match_torch_autograd(hidden):
    net, X, Y = small_problem(hidden)
    AL, caches = net.forward(X)
    grads = net.backward(caches, Y)
    Z, params = torch_forward(net, X)
    torch_cost = F.binary_cross_entropy_with_logits(Z, torch.tensor(Y))
    torch_cost.backward()
    assert net.cost(AL, Y, caches) == pytest.approx(torch_cost.item(), rel=1e-12)
    for key, p in params.items():
        assert rel_error(grads[f"d{key}"], p.grad.numpy()) < 1e-6, key


def test_cost_is_stable_for_huge_logits():
    net = NumpyNet([2, 1], ["sigmoid"])
    net.params["W1"] = np.array([[1000.0, -500.0]])
    X = np.array([[1.0, -1.0, 1.0, 0.0], [0.0, 1.0, 2.0, 2.0]])  # logits 1000, -1500, 0, -1000
    Y = np.array([[0.0, 1.0, 1.0, 0.0]])  # two confidently wrong, one undecided, one confidently right
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, log(0) or 0/0 (underflow is fine)
        AL, caches = net.forward(X)
        cost = net.cost(AL, Y, caches)
        grads = net.backward(caches, Y)
    expected = F.binary_cross_entropy_with_logits(torch.tensor(caches[-1][1]), torch.tensor(Y)).item()
    assert cost == pytest.approx(expected, rel=1e-12)
    assert cost == pytest.approx((1000 + 1500 + LN2) / 4)
    assert all(np.isfinite(g).all() for g in grads.values())
    # Without the logits (or with a non-sigmoid output) the cost falls back to clipping: large, but finite.
    assert np.isfinite(net.cost(AL, Y))
    tanh_out = NumpyNet([2, 1], ["tanh"])
    tanh_out.params["W1"] = np.array([[1000.0, -500.0]])
    AL, caches = tanh_out.forward(X)
    assert np.isfinite(tanh_out.cost(AL, Y, caches))
    assert all(np.isfinite(g).all() for g in tanh_out.backward(caches, Y).values())


def blobs(m=200, seed=0):
    rng = np.random.default_rng(seed)
    Y = (np.arange(m) % 2).reshape(1, -1).astype(float)
    X = rng.normal(size=(2, m)) * 0.7 + np.where(Y == 1, 1.5, -1.5) * np.array([[1.0], [0.5]])
    return X, Y


@pytest.mark.parametrize("batch_size, iterations", [(None, 300), (16, 30)])
def test_learns_separable_blobs(batch_size, iterations):
    X, Y = blobs()
    net = NumpyNet([2, 8, 1], ["relu", "sigmoid"], seed=1)
    seen = []
    costs = net.fit(X, Y, lr=0.1, iterations=iterations, batch_size=batch_size,
                    on_iteration=lambda i, c, accuracy: seen.append((i, c, accuracy)))
    assert len(costs) == iterations and [s[:2] for s in seen] == list(enumerate(costs))
    assert seen[-1][2] >= 0.95 and seen[-1][2] > seen[0][2]
    assert costs[-1] < costs[0] / 3
    proba = net.predict_proba(X)
    assert proba.shape == (X.shape[1],)
    assert ((proba > 0.5) == (Y[0] == 1)).mean() >= 0.95


def smooth_images(m=200, size=8, seed=0):
    """Image-like inputs scaled to [-1, 1] like the project's (low-frequency colour patches plus noise, flattened
    to (3 * size * size, m)); the label says whether the left half is brighter than the right, split at the
    median so the classes are exactly balanced and chance-level cost is exactly -log(0.5)."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(-1, 1, (m, 4, 4, 3)).repeat(size // 4, 1).repeat(size // 4, 2)
    img = np.clip(img + rng.normal(0, 0.1, img.shape), -1, 1)
    diff = img[:, :, : size // 2].mean((1, 2, 3)) - img[:, :, size // 2:].mean((1, 2, 3))
    return img.reshape(m, -1).T, (diff > np.median(diff)).astype(float).reshape(1, -1)


def test_small_init_stalls_where_he_init_learns():
    """Course 2, week 1: with N(0, 1) * 0.01 weights a deep ReLU net's signal shrinks ~100x per layer, the output
    is sigmoid(~0) and the cost stays at -log(0.5); He initialisation keeps the signal's scale and learns."""
    X, Y = smooth_images()
    dims, acts = [X.shape[0], 20, 10, 5, 1], ["relu"] * 3 + ["sigmoid"]
    small = NumpyNet(dims, acts, init="small", seed=1).fit(X, Y, lr=0.1, iterations=300)
    he = NumpyNet(dims, acts, init="he", seed=1).fit(X, Y, lr=0.1, iterations=300)
    assert max(abs(c - LN2) for c in small) < 0.005
    assert he[-1] < 0.2


def test_same_seed_same_params_and_costs():
    X, Y = blobs(60)
    nets = [NumpyNet([2, 6, 4, 1], ["tanh", "relu", "sigmoid"], seed=7) for _ in range(3)]
    assert all(np.array_equal(nets[0].params[k], nets[1].params[k]) for k in nets[0].params)
    other = NumpyNet([2, 6, 4, 1], ["tanh", "relu", "sigmoid"], seed=8)
    assert not np.array_equal(nets[0].params["W1"], other.params["W1"])
    runs = [net.fit(X, Y, lr=0.05, iterations=5, batch_size=8, seed=s) for net, s in zip(nets, (3, 3, 4))]
    assert runs[0] == runs[1] and runs[0] != runs[2]  # the shuffling seed matters, and only it
    assert all(np.array_equal(nets[0].params[k], nets[1].params[k]) for k in nets[0].params)


def test_state_dict_round_trips_without_pickle(tmp_path):
    X, _ = blobs(10)
    net = NumpyNet([2, 3, 1], ["relu", "sigmoid"], seed=0)
    np.savez(tmp_path / "net.npz", **net.state_dict())
    fresh = NumpyNet([2, 3, 1], ["relu", "sigmoid"], seed=99)
    with np.load(tmp_path / "net.npz", allow_pickle=False) as archive:
        fresh.load_state_dict(archive)
    np.testing.assert_array_equal(fresh.predict_proba(X), net.predict_proba(X))
    state = net.state_dict()
    state["W1"] += 1  # a copy: editing it leaves the network alone
    assert not np.array_equal(state["W1"], net.params["W1"])
    with pytest.raises(ValueError, match="W1"):
        fresh.load_state_dict({**net.state_dict(), "W1": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="keys"):
        fresh.load_state_dict({"W1": net.params["W1"]})


def test_float32():
    X, Y = blobs(40)
    net = NumpyNet([2, 4, 1], ["relu", "sigmoid"], dtype=np.float32)
    net.fit(X, Y, lr=0.1, iterations=3, batch_size=10)
    assert all(p.dtype == np.float32 for p in net.params.values())


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer_dims=[4, 3, 1], activations=["relu", "softmax"]), "unknown activation 'softmax'"),
    (dict(layer_dims=[4, 3, 1], activations=["sigmoid"]), "activations has 1 entries"),
    (dict(layer_dims=[4, 3, 1], activations=["relu", "relu", "sigmoid"]), "activations has 3 entries"),
    (dict(layer_dims=[4, 3, 1], activations=["relu", "sigmoid"], init="xavier"), "unknown init 'xavier'"),
    (dict(layer_dims=[4], activations=[]), "at least one layer"),
    (dict(layer_dims=[4, 0, 1], activations=["relu", "sigmoid"]), "positive integers"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NumpyNet(**kwargs)


def test_bad_shapes_raise():
    net = NumpyNet([3, 2, 1], ["relu", "sigmoid"])
    with pytest.raises(ValueError, match=r"X must have shape \(3, m\)"):
        net.forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="Y has 4"):
        net.fit(np.zeros((3, 5)), np.zeros((1, 4)), lr=0.1, iterations=1)
