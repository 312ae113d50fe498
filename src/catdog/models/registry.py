"""The architectures, declared: everything the code outside a builder needs to know about each one.

An architecture (a model entry's `arch`) is one entry of REGISTRY: the name of its builder in
models/architectures.py, the keys a `models` entry of it takes (each with what a valid value is), the rules between
them, how its attribution maps are computed, and a tiny valid entry that the tests build and train. The `check`
stage, attribution, `catdog explain` and the tests all read it from here.

No torch here: the `check` stage imports this module and runs whenever a param changes, and importing torch would
more than double its time (docs/models.md has the figures).
"""

from collections.abc import Callable
from dataclasses import dataclass

from catdog import CatdogError
from catdog.config import OPTIMIZERS, model_config
from catdog.models.numpy_net import ACTIVATIONS, INITS

BACKBONES = ("mobilenet_v2", "resnet18")  # models/pretrained.py builds these
AUGMENT_KEYS = ("crop_scale", "hflip")    # the knobs of training.loop.augment that an entry sets


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _widths(value) -> bool:
    return isinstance(value, list) and all(_int(v) and v > 0 for v in value)


def _augment(value) -> bool:
    if value is None:
        return True
    if not (isinstance(value, dict) and set(value) <= set(AUGMENT_KEYS)):
        return False
    scale = value.get("crop_scale", [0.6, 1.0])
    return (isinstance(scale, list) and len(scale) == 2 and all(_number(s) for s in scale)
            and 0 < scale[0] <= scale[1] <= 1 and isinstance(value.get("hflip", True), bool))


def _loss_weights(value) -> bool:
    return (isinstance(value, dict) and set(value) == {"classification", "brightness"}
            and all(_number(w) and w >= 0 for w in value.values()) and sum(value.values()) > 0)


@dataclass(frozen=True)
class Key:
    """One key of a model entry: `valid` says whether a value is good, `expect` what a good one is (the fix)."""
    valid: Callable[[object], bool]
    expect: str
    required: bool = True


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM on `layer` of the built model: a path of attribute names and indices (-1: the last), as
    'backbone.1.layer4'; or, for an architecture whose modules depend on its entry's `backbone`, one per backbone."""
    layer: str | dict[str, str]


OCCLUSION = "occlusion"  # each patch of an 8x8 grid greyed in turn: for any model, convolutional or not


@dataclass(frozen=True)
class Architecture:
    builder: str                      # a callable of catdog.models.architectures taking the entry
    keys: dict[str, Key]              # its own keys, beside COMMON's
    attribution: GradCam | str        # GradCam(layer) or OCCLUSION
    example: dict                     # its own keys of a tiny valid entry, for the tests (input size 32)
    rules: tuple[Callable[[dict], str | None], ...] = ()  # checks across keys: None, or what to change
    takes_load_weights: bool = False  # builder(cfg, load_weights): skips downloading weights a checkpoint replaces
    weight_decay: bool = True         # whether its optimizer has weight_decay


COMMON = {
    "arch": Key(lambda v: v in REGISTRY, "one of the architectures in src/catdog/models/registry.py"),
    "input_size": Key(lambda v: _int(v) and 8 <= v <= 4096, "a square side in pixels from 8 to 4096 (data.sizes "
                      "are prepared ahead, others decoded on first use)"),
    "optimizer": Key(lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "lr": Key(lambda v: _number(v) and v > 0, "a positive number, e.g. 0.001"),
    "batch_size": Key(lambda v: (_int(v) and v > 0) or v == "full", "a positive integer, or full (the whole "
                      "training split at once)"),
    "epochs": Key(lambda v: _int(v) and v > 0, "a positive integer"),
    "weight_decay": Key(lambda v: _number(v) and v >= 0, "a number >= 0 (0: no weight decay)", required=False),
}
AUGMENT = Key(_augment, "null, or {crop_scale: [low, high] with 0 < low <= high <= 1, hflip: true or false}",
              required=False)
HIDDEN = Key(_widths, "a list of positive integers, the hidden layers' widths, e.g. [256, 64] ([]: none)")


def _pooling_fits(cfg: dict) -> str | None:
    blocks = len(cfg["channels"])
    if cfg["input_size"] < 2**blocks:
        return f"input_size={cfg['input_size']} is too small for {blocks} pooling blocks: use at least " \
               f"{2**blocks}, or fewer channels entries"
    return None


def _backbone_fits(cfg: dict) -> str | None:
    if cfg["input_size"] < 32:  # both backbones downsample 32 times
        return f"input_size={cfg['input_size']} is too small for {cfg['backbone']}: use at least 32"
    return None


def _one_activation_per_layer(cfg: dict) -> str | None:
    if len(cfg["activations"]) != len(cfg["hidden"]) + 1:
        return f"activations has {len(cfg['activations'])} entries for {len(cfg['hidden'])} hidden layers and " \
               f"the output: give {len(cfg['hidden']) + 1}, the last one sigmoid"
    return None


REGISTRY = {
    "fc": Architecture(  # logistic, shallow, deep, deeper, mlp
        builder="fully_connected",
        keys={"hidden": HIDDEN, "augment": AUGMENT},
        attribution=OCCLUSION,
        example={"hidden": [8]}),
    "cnn": Architecture(  # convolutional, from scratch
        builder="convolutional",
        keys={"channels": Key(lambda v: _widths(v) and len(v) > 0, "a non-empty list of positive integers, one "
                              "conv3x3-BN-ReLU-maxpool block each, e.g. [32, 64, 128, 128]"),
              "augment": AUGMENT},
        attribution=GradCam("-5"),  # the last block's ReLU: before its max-pool, the pooling, flatten and head
        example={"channels": [4, 8]},
        rules=(_pooling_fits,)),
    "pretrained": Architecture(  # ImageNet backbone (resnet18, mobilenet_v2), frozen or fine-tuned
        builder="Pretrained",
        keys={"backbone": Key(lambda v: v in BACKBONES, f"one of {', '.join(BACKBONES)}"),
              "freeze": Key(lambda v: isinstance(v, bool), "true (train the head only) or false (every layer)"),
              "weights_file": Key(lambda v: v is None or isinstance(v, str), "null (the built-in ImageNet "
                                  "weights) or the path of a torchvision state_dict", required=False),
              "weights_sha256": Key(lambda v: v is None or isinstance(v, str), "null, or the sha256 of "
                                    "weights_file's bytes", required=False),
              "augment": AUGMENT},
        # the last convolutional block: ResNet18's layer4, MobileNetV2's last features block
        attribution=GradCam({"resnet18": "backbone.1.layer4", "mobilenet_v2": "backbone.1.0.-1"}),
        example={"backbone": "mobilenet_v2", "freeze": True, "weights_file": None, "weights_sha256": None},
        rules=(_backbone_fits,),
        takes_load_weights=True),
    "multitask": Architecture(  # classification + brightness regression
        builder="MultiTask",
        keys={"hidden": HIDDEN,
              "loss_weights": Key(_loss_weights, "{classification: w1, brightness: w2}, weights >= 0 and not both "
                                  "0, e.g. {classification: 0.7, brightness: 0.3}"),
              "augment": AUGMENT},
        attribution=OCCLUSION,
        example={"hidden": [8], "loss_weights": {"classification": 0.7, "brightness": 0.3}}),
    "numpy": Architecture(  # the course's L-layer network by hand, no torch inside
        builder="NumpyModel",
        keys={"hidden": HIDDEN,
              "activations": Key(lambda v: isinstance(v, list) and len(v) > 0 and all(a in ACTIVATIONS for a in v),
                                 f"a list of one activation per layer after the input, each one of "
                                 f"{', '.join(ACTIVATIONS)}, e.g. [relu, relu, sigmoid]"),
              "init": Key(lambda v: v in INITS, f"one of {', '.join(INITS)}", required=False)},
        attribution=OCCLUSION,
        example={"hidden": [6, 4], "activations": ["relu", "tanh", "sigmoid"], "optimizer": "sgd", "lr": 0.05},
        rules=(_one_activation_per_layer,),
        weight_decay=False),
}


def keys(arch: str) -> dict[str, Key]:
    """Every key an entry of `arch` takes: COMMON's and its own."""
    spec = REGISTRY[arch]
    common = {k: v for k, v in COMMON.items() if k != "weight_decay" or spec.weight_decay}
    return {**common, **spec.keys}


def check_entry(name: str, cfg: dict, unknown_keys: bool = True) -> None:
    """models.<name>: every key known to its arch, present where required, of a valid type and range, and the
    rules between them. unknown_keys=False lets extra keys pass (a checkpoint's entry, written by an older catdog)."""
    if not isinstance(cfg, dict):
        raise CatdogError(f"models.{name} must be a mapping of keys (arch, input_size, ...), not {cfg!r}")
    arch = cfg.get("arch")
    if arch not in REGISTRY:
        raise CatdogError(f"models.{name}.arch={arch!r} is unknown; valid: {', '.join(sorted(REGISTRY))}")
    known = keys(arch)
    for key, spec in known.items():
        if key not in cfg:
            if spec.required:
                raise CatdogError(f"models.{name}.{key} is missing: arch {arch} needs it, {spec.expect}")
        elif not spec.valid(cfg[key]):
            raise CatdogError(f"models.{name}.{key}={cfg[key]!r} must be {spec.expect}")
    extra = sorted(set(cfg) - set(known))
    if extra and unknown_keys:
        raise CatdogError(f"models.{name}.{extra[0]} is not a key of arch {arch}: remove it or fix its spelling; "
                          f"valid: {', '.join(known)}")
    for rule in REGISTRY[arch].rules:
        problem = rule(cfg)
        if problem:
            raise CatdogError(f"models.{name}: {problem}")


def check_model(params: dict) -> tuple[str, dict]:
    """The chosen model's name and entry, every key of it checked: what the `check` stage and `catdog tune` run."""
    name, cfg = model_config(params)
    check_entry(name, cfg)
    return name, cfg


def method(cfg: dict) -> str:
    """'gradcam' or 'occlusion': how the attribution maps of a model of this entry are computed."""
    return "gradcam" if isinstance(REGISTRY[cfg["arch"]].attribution, GradCam) else OCCLUSION


def gradcam_layer_path(cfg: dict) -> str:
    """The path of the layer Grad-CAM weighs in a model of this entry."""
    layer = REGISTRY[cfg["arch"]].attribution.layer
    return layer[cfg["backbone"]] if isinstance(layer, dict) else layer


def example_entry(arch: str, input_size: int = 32) -> dict:
    """A tiny valid entry of `arch`: what the tests build and train for every registered architecture."""
    cfg = {"arch": arch, "input_size": input_size, "optimizer": "adam", "lr": 0.01, "batch_size": 8, "epochs": 2,
           **REGISTRY[arch].example}
    check_entry(f"example_{arch}", cfg)
    return cfg
