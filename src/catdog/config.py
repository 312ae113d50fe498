"""params.yaml: loading it, picking the chosen model's entry, and catching bad values before heavy work."""

import re
from pathlib import Path

import yaml

from catdog import CatdogError
from catdog.paths import SYNTHETIC_BOXES

PARAMS_FILE = Path("params.yaml")
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam"}  # a model entry's optimizer: the torch.optim class it names
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")  # train.precision; what each does: device.autocast_dtype
INFERENCE = ("auto", "torch", "onnxruntime")  # train.inference; what auto picks: inference.forward.engine_for
DATA_KEYS = ("images", "sizes", "val_fraction", "test_fraction", "positive_class", "boxes", "train_fraction")
TRAIN_KEYS = ("device", "precision", "inference", "processes", "seed", "sweep")
EVALUATE_KEYS = ("device", "precision", "inference")
POSITIVE_CLASS = "dog"  # data.positive_class when params.yaml has none
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2's floats: `1e-5` is a number, as DVC and ruamel.yaml read it (and write it after `dvc exp run -S
    models.mlp.lr=0.00001`), not the string PyYAML's YAML 1.1 rules make of it."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


def load_params(path: Path = PARAMS_FILE) -> dict:
    if not path.exists():
        raise CatdogError(f"{path} not found: run the stages from the repository root")
    with open(path) as f:
        return yaml.load(f, Loader=ParamsLoader)


def model_config(params: dict) -> tuple[str, dict]:
    """The chosen model's name and entry. Its keys are checked against its architecture by
    models.registry.check_entry (the `check` stage, and build_model)."""
    models = params.get("models") or {}
    name = params.get("model")
    if not isinstance(name, str) or name not in models:
        raise CatdogError(f"model={name!r} is not an entry of `models`; valid: {', '.join(sorted(models))}")
    cfg = models[name]
    if not (isinstance(cfg, dict) and "arch" in cfg):
        raise CatdogError(f"models.{name} must be a mapping with an `arch` and the keys it needs, not {cfg!r}")
    check_weights_pin(name, cfg)
    return name, cfg


def check_weights_pin(name: str, cfg: dict) -> None:
    """A pretrained entry's weights_file is pinned by weights_sha256: DVC knows a param, not the file a path names,
    so a file replaced in place would otherwise leave train up to date. The message gives the file's sha256."""
    weights_file, pin = cfg.get("weights_file"), cfg.get("weights_sha256")
    if weights_file is None:
        if pin is not None:
            raise CatdogError(f"models.{name}.weights_sha256 is set but weights_file is null: remove "
                              f"models.{name}.weights_sha256, or set weights_file to the file it pins")
        return
    if not (isinstance(weights_file, str) and Path(weights_file).is_file()):
        raise CatdogError(f"models.{name}.weights_file={weights_file!r} is not a file: point it at a local "
                          "torchvision state_dict, or set it to null for the built-in ImageNet weights")
    if isinstance(pin, str) and SHA256.match(pin.lower()):
        return  # whether the file still has these bytes is checked where it is read (models.pretrained)
    import hashlib

    digest = hashlib.sha256()
    with open(weights_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest = digest.hexdigest()
    raise CatdogError(f"models.{name}.weights_file={weights_file!r} needs models.{name}.weights_sha256 (now "
                      f"{pin!r}), the sha256 of its bytes, so that DVC re-runs train when the file changes: set "
                      f"weights_sha256: {digest}")


def positive_class(data: dict) -> str:
    """data.positive_class: the class whose probability every model gives (index 1), matched against the class
    names by data.images.discover, in any case, singular or plural."""
    name = data.get("positive_class", POSITIVE_CLASS)
    if not (isinstance(name, str) and re.fullmatch(r"[^\s/\\]+(?: [^\s/\\]+)*", name)):
        raise CatdogError(f"data.positive_class={name!r} must be a class name such as dog or cat (a folder name "
                          "or the label that starts a file name, in any case, singular or plural)")
    return name


def check_synthetic(params: dict) -> None:
    synthetic = _section(params, "synthetic", ("n_images", "seed"))
    n_images = synthetic.get("n_images")
    if not (_integer(n_images) and n_images >= 2):
        raise CatdogError(f"synthetic.n_images={n_images!r} must be an integer >= 2")
    if not _seed(synthetic.get("seed", 0)):
        raise CatdogError(f"synthetic.seed={synthetic.get('seed')!r} must be an integer from 0 to 2**32 - 1")


def _section(params: dict, section: str, known: tuple[str, ...]) -> dict:
    """params[section], a mapping whose keys are all in `known`: a misspelt key would silently be a default."""
    value = params.get(section)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CatdogError(f"{section}={value!r} must be a mapping of keys ({', '.join(known)})")
    for key in value:
        if key not in known:
            raise CatdogError(f"{section}.{key} is not a key of {section}: remove it or fix its spelling; valid: "
                              f"{', '.join(known)}")
    return value


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not _fraction(value):
            raise CatdogError(f"data.{key}={value!r} must be a number in (0, 1), e.g. 0.1")
    if not val_fraction + test_fraction < 1:
        raise CatdogError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each be in (0, 1) "
            "and sum to less than 1"
        )


def check_data(params: dict) -> None:
    """The `data` section: the split fractions, the cached sizes, the positive class's form and the boxes file."""
    data = _section(params, "data", DATA_KEYS)
    for key in ("images", "sizes", "val_fraction", "test_fraction"):
        if key not in data:
            raise CatdogError(f"data.{key} is missing: every run needs {', '.join(DATA_KEYS[:4])} (docs/data.md)")
    if not (isinstance(data["images"], str) and data["images"].strip()):
        raise CatdogError(f"data.images={data['images']!r} must be the path of a folder of labelled images, e.g. "
                          "data/synthetic (docs/data.md)")
    check_fractions(data["val_fraction"], data["test_fraction"])
    positive_class(data)
    train_fraction = data.get("train_fraction", 1.0)
    if not (_fraction(train_fraction) or train_fraction == 1):
        raise CatdogError(f"data.train_fraction={train_fraction!r} must be in (0, 1]: the share of the training "
                          "split to train on")
    sizes = data["sizes"]
    if not (isinstance(sizes, list) and sizes and all(_integer(s) and 8 <= s <= 4096 for s in sizes)):
        raise CatdogError(f"data.sizes={sizes!r} must be a list of square sizes in pixels, each >= 8, e.g. [64, 128]")
    check_boxes(data)


def check_boxes(data: dict) -> None:
    """data.boxes: a path. Without the key there are no boxes. The file generate writes may be missing still (this
    runs before generate); any other must exist, since dvc.yaml makes it a dependency of prepare, and DVC's word
    for a missing one would not say which param to change."""
    if "boxes" not in data:
        return
    boxes = data["boxes"]
    if not (isinstance(boxes, str) and boxes.strip()):
        raise CatdogError(f"data.boxes={boxes!r} must be the path of a CSV of animal boxes "
                          f"(file,sha256,width,height,x0,y0,x1,y1), e.g. {SYNTHETIC_BOXES}")
    if Path(boxes) != SYNTHETIC_BOXES and not Path(boxes).is_file():
        raise CatdogError(f"data.boxes={boxes!r} does not exist: point it at a CSV of animal boxes "
                          f"(file,sha256,width,height,x0,y0,x1,y1), or back at {SYNTHETIC_BOXES}")


def _seed(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def training_seed(params: dict) -> int:
    """train.seed: the seed of the weights' initialisation, the batch order, augmentation and dropout. null (the
    default) follows `seed`, as before train.seed existed; any other value repeats a run on the same split (`seed`
    keeps the split and the train_fraction subset), `catdog repeat`'s repeats."""
    if not _seed(params.get("seed")):
        raise CatdogError(f"seed={params.get('seed')!r} must be an integer from 0 to 2**32 - 1: it seeds the split")
    seed = (params.get("train") or {}).get("seed")
    if seed is None:
        return params["seed"]
    if not _seed(seed):
        raise CatdogError(f"train.seed={seed!r} must be an integer from 0 to 2**32 - 1, or null to follow `seed`")
    return seed


def check_train(params: dict) -> None:
    """The keys of `train` that no other function here checks: the section's names and train.sweep."""
    sweep = _section(params, "train", TRAIN_KEYS).get("sweep", "")
    if not isinstance(sweep, str):
        raise CatdogError(f"train.sweep={sweep!r} must be a label (a string), or \"\" for none")


def device_name(params: dict, section: str = "train") -> str:
    """train.device (training) or evaluate.device (the test pass and plot's heatmaps)."""
    device = (params.get(section) or {}).get("device", "auto")
    if device not in DEVICES:
        raise CatdogError(f"{section}.device={device!r} is unknown; valid: {', '.join(DEVICES)}")
    return device


def check_precision(precision, section: str = "train") -> None:
    if precision not in PRECISIONS:
        raise CatdogError(f"{section}.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}")


def precision_name(params: dict, name: str | None = None, cfg: dict | None = None, section: str = "train") -> str:
    """train.precision (or evaluate.precision), the dtype of the forward passes. Whether the device has it is known
    only once the device is picked (device.DevicePolicy); given the model's entry, a NumPy model is held to
    float32, which it uses."""
    precision = (params.get(section) or {}).get("precision", "auto")
    check_precision(precision, section)
    if cfg is not None and cfg["arch"] == "numpy" and precision not in ("auto", "float32"):
        raise CatdogError(f"models.{name} (arch numpy) computes in NumPy float32: set {section}.precision: auto or "
                          "float32")
    return precision


def inference_name(params: dict, section: str = "train", device_type: str | None = None) -> str:
    """train.inference, the engine of the frozen backbone's feature pass in training (what the model is trained
    on), or evaluate.inference, the engine of the test pass; device_type: the device picked, where it is known."""
    values = params.get(section) or {}
    engine = values.get("inference", "auto")
    check_engine(engine, values.get("precision", "auto"), device_type, section=section)
    return engine


def check_evaluate(params: dict, name: str, cfg: dict) -> None:
    """The `evaluate` section: how the test pass runs, not what the model is; changing it re-runs no training."""
    _section(params, "evaluate", EVALUATE_KEYS)
    device_name(params, "evaluate")
    precision_name(params, name, cfg, "evaluate")
    inference_name(params, "evaluate")


def check_engine(engine, precision: str, device_type: str | None = None, cli: bool = False,
                 section: str = "train") -> None:
    """That <section>.inference=engine can run: ONNX Runtime runs float32 on the CPU, where it is installed. A half
    precision is refused by name; device_type: the device picked, where it is known. cli: the messages name
    `catdog predict`'s options (--inference, --device) instead of params."""
    def fix(key: str, value: str) -> str:
        return f"--{key} {value}" if cli else f"{section}.{key}: {value}"

    name = "--inference onnxruntime" if cli else f"{section}.inference=onnxruntime"
    if engine not in INFERENCE:
        raise CatdogError(f"{'--inference ' if cli else f'{section}.inference='}{engine!r} is unknown; valid: "
                          f"{', '.join(INFERENCE)}")
    if engine != "onnxruntime":
        return
    if device_type is not None and device_type != "cpu":
        raise CatdogError(f"{name} runs on the CPU, not on {device_type}: set {fix('inference', 'auto')} or "
                          f"torch, or {fix('device', 'cpu')}")
    if precision in ("bfloat16", "float16"):
        raise CatdogError(f"{name} runs float32, not {section}.precision={precision}: set {section}.precision: "
                          f"auto or float32, or {fix('inference', 'torch')}")
    if not onnxruntime_installed():
        raise CatdogError(f"{name} but onnxruntime, onnx or onnxscript is not installed: `.venv/bin/pip install "
                          f"onnxruntime onnx onnxscript`, or set {fix('inference', 'auto')}")


def onnxruntime_installed() -> bool:
    """ONNX Runtime and what torch.onnx.export needs, found without importing them (seconds of start-up)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def processes(params: dict, name: str, cfg: dict) -> int:
    """train.processes: how many processes train the model together (torchrun, DistributedDataParallel)."""
    n = params.get("train", {}).get("processes", 1)
    if not (isinstance(n, int) and n >= 1):
        raise CatdogError(f"train.processes={n!r} must be a positive integer")
    if n > 1 and cfg["arch"] == "numpy":
        raise CatdogError(f"models.{name} (arch numpy) trains in NumPy, in one process: set train.processes: 1")
    return n


def several_processes() -> bool:
    """Whether params.yaml asks for several training processes; False if it cannot be read (train then says why)."""
    try:
        return load_params().get("train", {}).get("processes", 1) != 1
    except Exception:
        return False


def flat(params: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: how hyperparameters are logged to MLflow."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
