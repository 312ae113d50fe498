"""What train reads, DVC knows: a local weights_file is pinned by its sha256, a param (so replacing the file re-runs
train, or is refused), the hub's ResNet18 file by the hash in its name, and the frozen-feature cache is keyed by the
versions of the libraries that computed the features."""

import copy
import hashlib

import pytest
import torch
import torchvision
import yaml
from torch import nn

from catdog import CatdogError
from catdog.config import model_config
from catdog.device import DevicePolicy
from catdog.models.architectures import build_model
from catdog.models.pretrained import backbone, resnet18_weights_path
from catdog.training import features
from conftest import ROOT, committed_params

PARAMS = committed_params()


@pytest.fixture
def weights(tmp_path):
    """A torchvision ResNet18 state_dict in a local file, and its sha256."""
    path = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def resnet_params(**entry) -> dict:
    params = copy.deepcopy(PARAMS)
    params["model"] = "resnet18_frozen"
    params["models"]["resnet18_frozen"].update(entry)
    return params


def test_a_weights_file_without_its_sha256_is_refused_with_the_value_to_set(weights):
    path, digest = weights
    with pytest.raises(CatdogError, match=rf"^models.resnet18_frozen.weights_file='{path}' needs "
                                          rf"models.resnet18_frozen.weights_sha256 \(now None\), the sha256 of its "
                                          rf"bytes, so that DVC re-runs train when the file changes: set "
                                          rf"weights_sha256: {digest}$"):
        model_config(resnet_params(weights_file=str(path)))
    assert model_config(resnet_params(weights_file=str(path), weights_sha256=digest))[0] == "resnet18_frozen"
    with pytest.raises(CatdogError, match="weights_sha256 is set but weights_file is null"):
        model_config(resnet_params(weights_sha256=digest))
    with pytest.raises(CatdogError, match="weights_file='nowhere.pth' is not a file"):
        model_config(resnet_params(weights_file="nowhere.pth", weights_sha256=digest))


def test_the_pin_is_a_param_of_train():
    """weights_sha256 lives in the model's entry, which dvc.yaml makes train's param: a new pin re-runs train."""
    train = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    assert "models.${model}" in train["params"]
    assert all("weights_sha256" in cfg for cfg in PARAMS["models"].values() if cfg["arch"] == "pretrained")


def test_a_weights_file_replaced_in_place_is_refused_with_its_new_sha256(weights):
    path, digest = weights
    cfg = {**PARAMS["models"]["resnet18_frozen"], "weights_file": str(path), "weights_sha256": digest}
    model = build_model(cfg, "resnet18_frozen")  # the pinned bytes load
    assert torch.equal(model.backbone[1].conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), path)  # other weights, same path: DVC sees no change
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CatdogError, match=rf"^weights_file={path} has sha256 {new}, not weights_sha256={digest} of its "
                                          rf"model entry: the file changed; set weights_sha256: {new} to train on it$"):
        build_model(cfg, "resnet18_frozen")
    with pytest.raises(CatdogError, match=rf"has no weights_sha256 in its model entry: set weights_sha256: {new}"):
        backbone("resnet18", str(path))
    build_model(cfg, "resnet18_frozen", load_weights=False)  # a checkpoint's model reads no weights file


def test_a_hub_file_whose_bytes_do_not_match_its_name_is_refused(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    hub_file = resnet18_weights_path()
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(weights[0].read_bytes())  # a state_dict, but not torchvision's ImageNet one
    with pytest.raises(CatdogError, match=rf"^{hub_file} is not torchvision's ResNet18 ImageNet file \(its sha256 does "
                                          r"not start with f37072fd\): delete it to download it again"):
        backbone("resnet18")


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_the_feature_cache_key_holds_the_library_versions(monkeypatch, engine):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(4, 3, 16, 16)
    policy = DevicePolicy("cpu", network, "float32")
    path = features.feature_cache_path(network, x, policy, engine)
    assert features.feature_cache_path(network, x, policy, engine) == path  # the same inputs, the same key
    monkeypatch.setattr(torch, "__version__", "99.0.0")
    assert features.feature_cache_path(network, x, policy, engine) != path
    monkeypatch.undo()
    monkeypatch.setattr(features, "version", lambda name: {"onnxruntime": "99.0.0"}[name])
    changed = features.feature_cache_path(network, x, policy, engine) != path
    assert changed == (engine == "onnxruntime")  # PyTorch's features do not depend on ONNX Runtime
