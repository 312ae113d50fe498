"""train.inference: ONNX Runtime gives PyTorch's outputs (1e-4) through the same scaling, auto picks it for
frozen backbones on the CPU only, the exported file and the backbone features are cached apart per engine,
a bad value is one line, and `catdog predict` answers the same in either engine."""

import copy
import json

import pytest
import torch
from torch import nn

from catdog import CatdogError, device
from catdog.commands import predict
from catdog.config import inference_name
from catdog.device import DevicePolicy
from catdog.inference import forward, onnx
from catdog.models.architectures import build_model
from catdog.models.registry import REGISTRY, example_entry
from catdog.paths import ONNX_CACHE
from catdog.training.features import backbone_features, feature_cache_path
from conftest import committed_params, write_image

PARAMS = committed_params()
CPU = torch.device("cpu")
SIZE = 16
# The registered torch architectures (numpy's is not torch) small enough to export in a second; a frozen pretrained
# model has its own tests below.
TINY = [arch for arch in REGISTRY if arch not in ("numpy", "pretrained")]


def tiny(kind):
    name, cfg = f"tiny_{kind}", example_entry(kind, SIZE)
    torch.manual_seed(0)
    return name, cfg, build_model(cfg, name).eval()


class TinyFrozen(nn.Module):
    """What auto looks for in a frozen pretrained model (models.Pretrained): frozen, a backbone and a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = True
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def images(n=10, side=SIZE):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", TINY)
def test_onnx_runtime_gives_pytorchs_outputs_at_any_batch_size_and_exports_once(kind, tmp_path, monkeypatch):
    _, _, model = tiny(kind)
    x = images()
    expected = forward.predict(model, x, 4, CPU, precision="float32")
    run = forward.runner(model, SIZE, CPU, engine="onnxruntime", cache=tmp_path)
    assert run.engine == "onnxruntime"
    got = run(x, 3)  # batches of 3, 3, 3, 1: the batch dimension is free
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert torch.allclose(run(x, "full"), got, atol=1e-6, rtol=0)  # one batch of all 10
    assert len(list(tmp_path.glob("*.onnx"))) == 1 and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr("catdog.inference.onnx.export_onnx", lambda *a: pytest.fail("exported again"))
    again = forward.runner(model, SIZE, CPU, engine="onnxruntime", cache=tmp_path)(x, 3)
    assert torch.equal(again, got)  # the cached file, fixed session settings: byte-identical on rerun


def test_other_weights_get_another_file(tmp_path):
    _, _, model = tiny("cnn")
    first = onnx.onnx_file(model, SIZE, tmp_path)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert onnx.onnx_file(model, SIZE, tmp_path) != first
    assert onnx.model_key(model, 32) != onnx.model_key(model, SIZE)  # another input size


def test_a_frozen_model_runs_its_backbone_in_onnx_runtime_and_its_head_in_torch(tmp_path):
    model = TinyFrozen().eval()
    x = images()
    run = forward.runner(model, SIZE, CPU, cache=tmp_path)  # auto
    assert run.engine == "onnxruntime"
    assert torch.allclose(run(x, 4), forward.predict(model, x, 4, CPU), atol=1e-4, rtol=0)
    assert [p.name for p in tmp_path.glob("*.onnx")] == [f"{onnx.model_key(model.backbone, SIZE)}.onnx"]
    with torch.no_grad():
        model.head.weight.add_(1.0)  # another head trained on the same backbone: the same file
    forward.runner(model, SIZE, CPU, cache=tmp_path)
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_auto_is_onnx_runtime_for_frozen_backbones_on_the_cpu_in_float32(monkeypatch):
    cnn, fc, frozen = tiny("cnn")[2], tiny("fc")[2], TinyFrozen()
    assert forward.engine_for("auto", frozen, CPU) == "onnxruntime"
    assert forward.engine_for("auto", frozen.backbone, CPU, backbone=True) == "onnxruntime"
    assert forward.engine_for("auto", cnn, CPU) == "torch"  # a new checkpoint each training: export each time
    assert forward.engine_for("auto", fc, CPU) == "torch"
    assert forward.engine_for("torch", cnn, CPU) == "torch"
    assert forward.engine_for("onnxruntime", fc, CPU) == "onnxruntime"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert forward.engine_for("auto", frozen, CPU, "bfloat16") == "torch"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert forward.engine_for("auto", frozen, torch.device("cuda")) == "torch"
    with pytest.raises(CatdogError, match=r"^train.inference=onnxruntime runs on the CPU, not on cuda: set "
                                          r"train.inference: auto or torch, or train.device: cpu$"):
        forward.engine_for("onnxruntime", cnn, torch.device("cuda"))
    with pytest.raises(CatdogError, match=r"^train.inference=onnxruntime runs float32, not train.precision="):
        forward.engine_for("onnxruntime", cnn, CPU, "bfloat16")
    monkeypatch.setattr(forward, "onnxruntime_installed", lambda: False)
    assert forward.engine_for("auto", frozen, CPU) == "torch"  # a served model's environment without it


@pytest.mark.parametrize("value, message", [
    ("tensorrt", "train.inference='tensorrt' is unknown; valid: auto, torch, onnxruntime"),
    (None, "train.inference=None is unknown; valid: auto, torch, onnxruntime"),
])
def test_a_bad_inference_param_is_one_line(value, message):
    params = copy.deepcopy(PARAMS)
    params["train"]["inference"] = value
    with pytest.raises(CatdogError) as error:
        inference_name(params)
    assert str(error.value) == message


def test_onnxruntime_with_a_half_precision_is_refused_by_check():
    params = copy.deepcopy(PARAMS)
    params["train"].update(inference="onnxruntime", precision="bfloat16")
    with pytest.raises(CatdogError, match=r"^train.inference=onnxruntime runs float32, not train.precision=bfloat16: "
                                          r"set train.precision: auto or float32, or train.inference: torch$"):
        inference_name(params)
    assert inference_name(PARAMS) == "auto"


def test_cached_features_are_kept_apart_by_engine(monkeypatch, tmp_path):
    # absolute: repo_root() / it is it
    monkeypatch.setattr("catdog.training.features.FEATURE_CACHE", tmp_path / "features")
    monkeypatch.setattr(forward, "ONNX_CACHE", tmp_path / "onnx")
    torch.manual_seed(0)
    backbone = TinyFrozen().backbone
    x = images(6)
    policy = DevicePolicy(CPU, backbone, "float32")
    paths = {e: feature_cache_path(backbone, x, policy, e) for e in ("torch", "onnxruntime")}
    assert paths["torch"] != paths["onnxruntime"]
    features = {e: backbone_features(backbone, x, CPU, batch_size=4, inference=e) for e in ("torch", "onnxruntime")}
    assert sorted((tmp_path / "features").iterdir()) == sorted(paths.values())
    assert torch.allclose(features["torch"], features["onnxruntime"], atol=1e-4, rtol=0)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # the backbone, exported once
    assert torch.equal(backbone_features(backbone, x, CPU, inference="auto"), features["onnxruntime"])  # read back


def test_catdog_predict_answers_the_same_in_either_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the ONNX cache goes to this folder's .cache/onnx
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setattr(forward, "ONNX_CACHE", ONNX_CACHE)  # not conftest's: relative to it again
    name, cfg, model = tiny("cnn")
    torch.save({"model": name, "config": cfg, "classes": ["cat", "dog"], "best_epoch": 1,
                "state_dict": model.state_dict()}, tmp_path / "model.pt")
    for i in range(6):
        write_image(tmp_path / "photos" / f"{i}.png", (40 * i, 200 - 30 * i, 90), size=(20 + i, 18))
    answers = {}
    for engine in ("torch", "onnxruntime"):
        predict.main(["--model", str(tmp_path / "model.pt"), "--inference", engine, "--json", "--batch-size", "4",
                      str(tmp_path / "photos")])
        answers[engine] = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in answers["torch"]] == [r["label"] for r in answers["onnxruntime"]]
    assert [r["probabilities"]["dog"] for r in answers["onnxruntime"]] == pytest.approx(
        [r["probabilities"]["dog"] for r in answers["torch"]], abs=1e-5)
    assert len(list((tmp_path / ".cache" / "onnx").glob("*.onnx"))) == 1


def test_catdog_predict_refuses_onnxruntime_on_a_gpu_in_one_line(monkeypatch):
    cnn = tiny("cnn")[2]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    with pytest.raises(CatdogError, match=r"^--inference onnxruntime runs on the CPU, not on cuda: set --inference "
                                          r"auto or torch, or --device cpu$"):
        forward.runner(cnn, SIZE, torch.device("cuda"), engine="onnxruntime", cli=True)
