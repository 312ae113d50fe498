"""Transfer learning: freezing, the cached-feature path, augmentation and the small-data split."""

import copy

import numpy as np
import torch

from catdog.data.prepared import train_subset
from catdog.data.tensors import Split, to_input
from catdog.inference.forward import predict
from catdog.models.architectures import build_model
from catdog.training.features import backbone_features
from catdog.training.loop import augment, fit, seed_everything
from conftest import committed_params

MODELS = committed_params()["models"]
CPU = torch.device("cpu")


def tiny(side=32, n=8):
    generator = torch.Generator().manual_seed(1)
    return Split(torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator),
                 torch.tensor([0.0, 1.0] * (n // 2)), torch.zeros(n))


def mobilenet(freeze, **changes):
    seed_everything(0)
    return {**MODELS["mobilenet_v2_frozen"], "freeze": freeze, "input_size": 32, "epochs": 2, "batch_size": 4,
            **changes}


def test_frozen_training_changes_the_head_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the feature cache goes to this repository root
    cfg = mobilenet(freeze=True, augment={"crop_scale": [0.8, 1.0], "hflip": True})  # the per-batch path
    model = build_model(cfg)
    before = copy.deepcopy(model.state_dict())
    fit(model, cfg, tiny(), tiny(), CPU, seed=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))  # BN stats too
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_fine_tuning_changes_the_backbone():
    cfg = mobilenet(freeze=False)
    model = build_model(cfg)
    before = copy.deepcopy(model.state_dict())
    fit(model, cfg, tiny(), tiny(), CPU, seed=0)
    changed = [k for k, v in model.backbone.named_parameters() if not torch.equal(before[f"backbone.{k}"], v)]
    assert len(changed) == len(list(model.backbone.parameters()))  # every backbone weight trained


def test_cached_features_give_the_same_head_outputs_as_the_naive_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = mobilenet(freeze=True)
    model = build_model(cfg)
    data = tiny()
    naive = predict(model, data.x, 4, CPU)
    cached = model.head(backbone_features(model.backbone, data.x, CPU)).detach()
    assert torch.allclose(naive, cached, atol=1e-5)
    assert len(list((tmp_path / ".cache/features").iterdir())) == 1
    again = model.head(backbone_features(model.backbone, data.x, CPU)).detach()  # read back from the cache
    assert torch.equal(cached, again)

    history = fit(model, cfg, data, data, CPU, seed=0)  # trains the head on cached features
    trained = build_model(cfg)
    trained.load_state_dict(history.best_state)  # a whole model: backbone and head
    val_loss = history.rows[history.best_epoch - 1]["val_loss"]
    logits = predict(trained, data.x, 4, CPU)[:, 0]
    assert abs(torch.nn.functional.binary_cross_entropy_with_logits(logits, data.y).item() - val_loss) < 1e-4


def test_augmentation_is_seeded_and_keeps_shape():
    images = tiny(side=16).x
    first = augment(images, torch.Generator().manual_seed(3))
    again = augment(images, torch.Generator().manual_seed(3))
    assert first.shape == images.shape and first.dtype == torch.uint8 and torch.equal(first, again)
    assert not torch.equal(first, images)
    flipped = augment(images, torch.Generator().manual_seed(0), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                      hflip=True)
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images))


def test_train_fraction_is_stratified_and_leaves_the_rest_alone():
    y = np.array([0] * 60 + [1] * 40, dtype=np.uint8)
    x, brightness = np.arange(100), np.linspace(0, 1, 100)
    sx, sy, sb = train_subset(x, y, brightness, 0.1, seed=0)
    assert len(sy) == 10 and sy.sum() == 4 and np.array_equal(sb, brightness[sx])
    assert np.array_equal(train_subset(x, y, brightness, 0.1, seed=0)[0], sx)
    assert train_subset(x, y, brightness, 1.0, seed=0)[0] is x


def test_inputs_keep_the_seeds_scaling_and_features_pass_through():
    assert torch.equal(to_input(torch.tensor([0, 255], dtype=torch.uint8), CPU), torch.tensor([-1.0, 1.0]))
    features = torch.randn(3, 5)
    assert to_input(features, CPU) is features
