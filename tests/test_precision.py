"""train.precision: float32 by default on the CPU, bf16 autocast there only on CPUs with bf16 in hardware, and
cached backbone features never shared between precisions."""

import copy

import pytest
import torch
from torch import nn

from catdog import CatdogError, device
from catdog.config import precision_name
from catdog.data.tensors import Split
from catdog.device import DevicePolicy, autocast_dtype
from catdog.inference.forward import predict
from catdog.models.architectures import build_model
from catdog.training.features import backbone_features, feature_cache_path
from catdog.training.loop import fit, seed_everything
from conftest import committed_params

PARAMS = committed_params()
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
NO_BF16 = "train.precision=bfloat16: this CPU has no native bf16 (avx512_bf16/amx_bf16); use float32 or auto"


def with_precision(precision) -> dict:
    params = copy.deepcopy(PARAMS)
    params["train"]["precision"] = precision
    return params


def tiny_split(side: int, n: int = 8) -> Split:
    generator = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator),
                 torch.tensor([0.0, 1.0] * (n // 2)), torch.rand(n, generator=generator))


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU's answer to 'native bf16?', set by the test: CI machines have either."""
    def set_native(native: bool) -> None:
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    return set_native


def test_params_yaml_says_auto():
    assert precision_name(PARAMS) == "auto"
    assert precision_name({"train": {}}) == "auto"  # params from before the key existed


@pytest.mark.parametrize("value", ["fp8", "bf16", True, None])
def test_an_unknown_precision_is_one_line_listing_the_valid_ones(value):
    with pytest.raises(CatdogError) as error:
        precision_name(with_precision(value))
    assert str(error.value) == f"train.precision={value!r} is unknown; valid: auto, float32, bfloat16, float16"


def test_a_numpy_model_is_held_to_float32():
    cfg = PARAMS["models"]["numpy_deep"]
    assert precision_name(with_precision("float32"), "numpy_deep", cfg) == "float32"
    with pytest.raises(CatdogError, match=r"^models.numpy_deep \(arch numpy\) computes in NumPy float32: set "
                                          r"train.precision: auto or float32$"):
        precision_name(with_precision("bfloat16"), "numpy_deep", cfg)
    assert DevicePolicy(CPU, build_model(cfg), "auto").precision == "float32"


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_float32_with_bf16_hardware_or_without(bf16_cpu, native):
    """The same params give the same metrics on every CPU: auto never picks bf16 there."""
    bf16_cpu(native)
    policy = DevicePolicy(CPU, build_model(PARAMS["models"]["cnn"]), "auto")
    assert policy.amp_dtype is None and policy.precision == "float32"
    assert not policy.scaler().is_enabled()


def test_bfloat16_on_a_cpu_with_native_bf16_autocasts_in_bf16(bf16_cpu):
    bf16_cpu(True)
    policy = DevicePolicy(CPU, build_model(PARAMS["models"]["cnn"]), "bfloat16")
    assert policy.amp_dtype == torch.bfloat16 and policy.precision == "bfloat16"
    assert not policy.scaler().is_enabled()  # bf16 has float32's range: no loss scaling
    with policy.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_bfloat16_on_a_cpu_without_it_is_one_clear_line(bf16_cpu):
    bf16_cpu(False)
    with pytest.raises(CatdogError) as error:
        DevicePolicy(CPU, build_model(PARAMS["models"]["cnn"]), "bfloat16")
    assert str(error.value) == NO_BF16


@pytest.mark.parametrize("capabilities, native", [
    ({"avx512_bf16": True}, True),
    ({"amx_bf16": True, "avx512_bf16": False}, True),
    ({"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}, False),  # bf16 only emulated
    ({"architecture": "arm64", "bf16": True}, False),  # not measured on ARM: not taken
    ({}, False),
])
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert device.cpu_has_native_bf16() is native


def test_float16_is_for_cuda_only():
    with pytest.raises(CatdogError, match="^train.precision=float16 runs on CUDA only, not on cpu; use float32 or "
                                          "auto$"):
        autocast_dtype(CPU, "float16")
    with pytest.raises(CatdogError, match="^train.precision=bfloat16 runs on CUDA and the CPU only, not on mps"):
        autocast_dtype(torch.device("mps"), "bfloat16")
    assert autocast_dtype(torch.device("mps"), "auto") is None


@pytest.mark.parametrize("gpu_bf16", [True, False])
def test_each_precision_on_cuda(monkeypatch, gpu_bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: gpu_bf16)
    assert autocast_dtype(CUDA, "auto") == (torch.bfloat16 if gpu_bf16 else torch.float16)
    assert autocast_dtype(CUDA, "float32") is None
    assert autocast_dtype(CUDA, "float16") == torch.float16
    if gpu_bf16:
        assert autocast_dtype(CUDA, "bfloat16") == torch.bfloat16
    else:
        with pytest.raises(CatdogError, match="^train.precision=bfloat16: this GPU has no native bf16 "
                                              r"\(Ampere or later\); use float16 or auto$"):
            autocast_dtype(CUDA, "bfloat16")


def test_a_cnn_trains_in_bf16_on_the_cpu(bf16_cpu):
    """The forward passes really run in bf16 (a conv's outputs); losses, weights and outputs stay float32."""
    bf16_cpu(True)  # this CPU may emulate it: slow, but the loop is the same and the data tiny
    cfg = {**PARAMS["models"]["cnn"], "channels": [8, 8, 8, 8], "epochs": 2, "batch_size": 4}
    data = tiny_split(cfg["input_size"])
    seed_everything(0)
    model = build_model(cfg)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    history = fit(model, cfg, data, data, CPU, seed=0, precision="bfloat16")
    assert len(history.rows) == 2 and seen and set(seen) == {torch.bfloat16}
    for row in history.rows:
        assert all(torch.isfinite(torch.tensor(v)) for v in row.values()), row
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    seen.clear()
    outputs = predict(model, data.x, 4, CPU, "bfloat16")
    assert set(seen) == {torch.bfloat16} and outputs.dtype == torch.float32 and torch.isfinite(outputs).all()
    seen.clear()
    predict(model, data.x, 4, CPU)  # auto: float32
    assert set(seen) == {torch.float32}


def test_cached_features_are_kept_apart_by_precision(bf16_cpu, monkeypatch, tmp_path):
    bf16_cpu(True)
    # absolute: repo_root() / tmp_path is tmp_path
    monkeypatch.setattr("catdog.training.features.FEATURE_CACHE", tmp_path)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = tiny_split(16).x
    paths = {p: feature_cache_path(backbone, x, DevicePolicy(CPU, backbone, p)) for p in ("auto", "float32",
                                                                                       "bfloat16")}
    assert paths["auto"] == paths["float32"] != paths["bfloat16"]  # auto is float32 on the CPU: the same features
    # PyTorch's precisions: auto would run this convolutional backbone in ONNX Runtime on the CPU in float32
    features = {p: backbone_features(backbone, x, CPU, precision=p, inference="torch")
                for p in ("float32", "bfloat16")}
    assert sorted(tmp_path.iterdir()) == sorted([paths["float32"], paths["bfloat16"]])
    assert not torch.equal(features["float32"], features["bfloat16"])  # bf16 round-off
    assert torch.equal(backbone_features(backbone, x, CPU, precision="bfloat16", inference="torch"),
                       features["bfloat16"])  # read back
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    on_cuda = feature_cache_path(backbone, x, DevicePolicy(CUDA, backbone, "bfloat16"))
    assert on_cuda not in paths.values()  # a GPU's bf16 kernels round otherwise than the CPU's
