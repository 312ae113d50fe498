"""Offline ImageNet backbones: the MobileNetV2 weights are the real ones, ResNet18 fails fast without its file."""
import time

import pytest
import torch
import torchvision
from torch.nn.functional import cosine_similarity

from catdog import CatdogError
from catdog.models.pretrained import (
    MOBILENET_SHA256,
    ImageNetInput,
    backbone,
    mobilenet_weights_path,
    resnet18_weights_path,
    sha256,
)


@pytest.fixture(scope="module")
def mobilenet():
    model, dim = backbone("mobilenet_v2")
    return model.eval(), dim


def test_imagenet_input_maps_minus_one_and_one():
    x = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])
    y = ImageNetInput()(x)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(y[0, :, 0, 0], -mean / std)
    assert torch.allclose(y[1, :, 0, 0], (1 - mean) / std)
    assert list(ImageNetInput().parameters()) == []  # buffers only: nothing to train


def test_mobilenet_weights_are_the_real_ones(mobilenet):
    model, dim = mobilenet
    path = mobilenet_weights_path()
    assert sha256(path) == MOBILENET_SHA256
    file = torch.load(path, map_location="cpu", weights_only=True)
    features = model[1][0]  # Sequential(ImageNetInput, Sequential(features, pool, flatten))
    assert torch.equal(features[0][0].weight, file["features.0.0.weight"])
    assert torch.equal(features[18][1].running_var, file["features.18.1.running_var"])
    assert torch.equal(features[18][1].weight, file["features.18.1.weight"])
    fresh = torchvision.models.mobilenet_v2().features
    assert not torch.allclose(features[0][0].weight, fresh[0][0].weight)
    # every tensor came from the file (the strict, positional load)
    assert all(torch.equal(a, b) for a, b in zip(features.state_dict().values(), file.values()))
    assert dim == 1280


def test_mobilenet_features_shape_and_meaning(mobilenet):
    model, _ = mobilenet
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, 1280)
        y, x = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 96), indexing="ij")
        smooth = torch.stack([x * 0.5, y * 0.3, torch.full_like(x, -0.2)])
        stripes = torch.sign(torch.sin(x * 30)).expand(3, 96, 96)
        f = model(torch.stack([smooth, smooth.flip(-1), stripes]))
    # ImageNet features barely move under a mirror image but tell a soft gradient from hard stripes
    # (measured: 0.90 vs 0.22).
    assert cosine_similarity(f[0], f[1], dim=0) > 0.75
    assert cosine_similarity(f[0], f[2], dim=0) < 0.5


def test_resnet18_offline_fails_fast_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would override TORCH_HOME
    assert resnet18_weights_path().parent == tmp_path / "torch" / "hub" / "checkpoints"
    start = time.monotonic()
    with pytest.raises(CatdogError) as err:
        backbone("resnet18")
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and "weights_file" in message and "\n" not in message


def test_resnet18_from_a_local_weights_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), path)
    model, dim = backbone("resnet18", weights_file=str(path), weights_sha256=sha256(path))
    assert dim == 512
    assert torch.equal(model[1].conv1.weight, reference.conv1.weight)
    with torch.no_grad():
        assert model.eval()(torch.rand(3, 3, 64, 64) * 2 - 1).shape == (3, 512)


def test_a_wrong_weights_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2().features.state_dict(), path)
    with pytest.raises(CatdogError, match="does not fit"):
        backbone("resnet18", weights_file=str(path), weights_sha256=sha256(path))


def test_unknown_name():
    with pytest.raises(ValueError, match="mobilenet_v2, resnet18"):
        backbone("vgg16")
