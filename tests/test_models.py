"""Every entry of `models` in params.yaml builds, gives one output row per image, and learns in the real loop."""

import pytest
import torch
from torch import nn

from catdog import CatdogError
from catdog.data.tensors import Split
from catdog.device import DevicePolicy
from catdog.inference.forward import predict
from catdog.models.architectures import ARCHITECTURES, MultiTask, build_model
from catdog.models.pretrained import sha256
from catdog.models.registry import REGISTRY, check_entry, example_entry
from catdog.training.loop import fit, losses, seed_everything
from conftest import committed_params

MODELS = committed_params()["models"]


@pytest.fixture(scope="module", autouse=True)
def resnet18_weights_offline(tmp_path_factory):
    """torchvision's ResNet18 ImageNet file cannot be had offline: these tests use a random one in its place."""
    import torchvision

    torch.manual_seed(0)
    network = torchvision.models.resnet18()
    for module in network.modules():  # batch-norm statistics of real activations, as trained weights have
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        network(torch.rand(16, 3, 64, 64) * 2 - 1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(network.state_dict(), path)
    for cfg in MODELS.values():
        if cfg.get("backbone") == "resnet18":
            cfg["weights_file"], cfg["weights_sha256"] = str(path), sha256(path)


def tiny_split(side: int, n: int = 8) -> Split:
    generator = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator),
                 torch.tensor([0.0, 1.0] * (n // 2)), torch.rand(n, generator=generator))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_outputs_a_logit_per_image_and_brightness_if_multitask(name):
    cfg = MODELS[name]
    model = build_model(cfg)
    x = torch.rand(5, 3, cfg["input_size"], cfg["input_size"]) * 2 - 1
    assert model(x).shape == (5, 2 if cfg["arch"] == "multitask" else 1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_few_optimisation_steps_lower_the_loss(name):
    cfg = {**MODELS[name], "epochs": 10, "batch_size": 8}
    seed_everything(0)
    model = build_model(cfg)
    data = tiny_split(cfg["input_size"])
    history = fit(model, cfg, data, data, torch.device("cpu"), seed=0)
    losses_per_epoch = [row["train_loss"] for row in history.rows]
    assert len(losses_per_epoch) == 10 and losses_per_epoch[-1] < losses_per_epoch[0] - 1e-3, losses_per_epoch


def test_logistic_regression_is_one_linear_layer_on_the_flattened_image():
    layers = [m for m in build_model(MODELS["logistic"]).modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(128 * 128 * 3, 1)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_entry_passes_its_architectures_check(name):
    check_entry(name, MODELS[name])


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_registered_architecture_builds_outputs_and_learns(arch):
    """Its registration names a builder, and its example entry builds a model that learns in the real loop."""
    assert ARCHITECTURES[arch].__name__ == REGISTRY[arch].builder
    cfg = {**example_entry(arch), "epochs": 10}
    seed_everything(0)
    model = build_model(cfg, f"example_{arch}")  # a pretrained one with its ImageNet weights (installed offline)
    assert model(torch.rand(5, 3, 32, 32) * 2 - 1).shape[0] == 5
    data = tiny_split(32)
    history = fit(model, cfg, data, data, torch.device("cpu"), seed=0)
    losses_per_epoch = [row["train_loss"] for row in history.rows]
    assert losses_per_epoch[-1] < losses_per_epoch[0] - 1e-3, losses_per_epoch


def test_multitask_loss_is_the_weighted_sum_of_bce_and_mse():
    outputs = torch.tensor([[2.0, 0.9], [-1.0, 0.2], [0.5, 0.4]])
    y, brightness = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.7, 0.1, 0.4])
    named = losses(outputs, y, brightness, {"loss_weights": {"classification": 0.7, "brightness": 0.3}})
    bce = nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], y)
    mse = ((outputs[:, 1] - brightness) ** 2).mean()
    assert torch.allclose(named["class_loss"], bce) and torch.allclose(named["brightness_loss"], mse)
    assert torch.allclose(named["loss"], 0.7 * bce + 0.3 * mse)
    only_brightness = losses(outputs, y, brightness, {"loss_weights": {"classification": 0, "brightness": 1}})
    assert torch.allclose(only_brightness["loss"], mse)


def test_multitask_history_carries_both_losses():
    cfg = {**MODELS["multitask"], "epochs": 2, "hidden": [16, 8]}
    data = tiny_split(cfg["input_size"])
    row = fit(MultiTask(cfg), cfg, data, data, torch.device("cpu"), seed=0).rows[-1]
    assert {"train_class_loss", "train_brightness_loss", "val_class_loss", "val_brightness_loss"} <= set(row)
    assert row["train_loss"] == pytest.approx(0.7 * row["train_class_loss"] + 0.3 * row["train_brightness_loss"],
                                              rel=1e-5)


@pytest.mark.parametrize("changes, message", [
    ({"arch": "multitask", "loss_weights": {"classification": 1}}, "models.bad.loss_weights=.* must be "
                                                                   r"\{classification: w1, brightness: w2\}"),
    ({"arch": "numpy", "activations": ["relu", "softmax"]}, "models.bad.activations=.* each one of relu, tanh"),
    ({"arch": "cnn", "channels": [8, 8, 8, 8], "input_size": 8}, "input_size=8 is too small for 4 pooling blocks"),
    ({**MODELS["mobilenet_v2_frozen"], "input_size": 16}, "input_size=16 is too small for mobilenet_v2"),
    ({"arch": "cnn"}, "models.bad.channels is missing: arch cnn needs it, a non-empty list"),
])
def test_a_model_that_cannot_be_built_is_one_clear_line(changes, message):
    with pytest.raises(CatdogError, match=message):
        build_model({**MODELS["mlp"], **changes}, "bad")


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_trains_in_bf16_where_the_gpu_has_it_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    policy = DevicePolicy("cuda", build_model(MODELS["cnn"]))
    assert policy.amp_dtype == expected and policy.memory_format == torch.channels_last
    assert DevicePolicy("cuda", precision="float32").amp_dtype is None
    assert DevicePolicy("cpu", build_model(MODELS["cnn"])).amp_dtype is None  # auto: the CPU trains in float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["cnn", "multitask", pytest.param("mobilenet_v2_finetune", marks=pytest.mark.slow)])
def test_the_mixed_precision_loop_trains_float32_weights(monkeypatch, name, dtype):
    """The CUDA path's training loop where CI can run it: PyTorch's CPU autocast in the dtype CUDA would use, with
    the gradient scaler for fp16. Forward passes in half precision, losses, weights and outputs in float32."""
    cfg = {**MODELS[name], "epochs": 10, "batch_size": 8}
    data = tiny_split(cfg["input_size"])

    def train():
        seed_everything(0)
        model = build_model(cfg)
        return model, fit(model, cfg, data, data, torch.device("cpu"), seed=0).rows

    _, float32_rows = train()
    init, make_scaler, scalers = DevicePolicy.__init__, DevicePolicy.scaler, []

    def mixed_precision(self, device, model=None, precision="auto"):
        init(self, device, model, precision)
        self.amp_dtype = dtype if precision != "float32" else None
    monkeypatch.setattr(DevicePolicy, "__init__", mixed_precision)
    monkeypatch.setattr(DevicePolicy, "scaler", lambda self: scalers.append(make_scaler(self)) or scalers[-1])
    model, rows = train()

    assert [s.is_enabled() for s in scalers] == [dtype == torch.float16]
    assert rows[0]["train_loss"] == pytest.approx(float32_rows[0]["train_loss"], rel=0.05)  # same start, round-off
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"], [row["train_loss"] for row in rows]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    outputs = predict(model, data.x, 8, torch.device("cpu"))
    assert outputs.dtype == torch.float32 and torch.isfinite(outputs).all()
