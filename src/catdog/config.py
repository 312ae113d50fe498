"""params.yaml: loading it, picking the chosen model's entry, and catching bad values before heavy work."""

from pathlib import Path

import yaml

from catdog import CatdogError
from catdog.paths import SYNTHETIC_BOXES

PARAMS_FILE = Path("params.yaml")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")  # train.precision; what each does: training.autocast_dtype
INFERENCE = ("auto", "torch", "onnxruntime")  # train.inference; what auto picks: onnx_engine.engine_for
MODEL_KEYS = ("arch", "input_size", "optimizer", "lr", "batch_size", "epochs")


def architectures() -> list[str]:
    """The names in models.ARCHITECTURES, read from the source: importing models imports torch, a second of the
    `check` stage, which runs whenever a param changes. tests/test_config.py holds the two equal."""
    import ast

    tree = ast.parse((Path(__file__).parent / "models.py").read_text())
    registry = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(target, "id", None) == "ARCHITECTURES" for target in node.targets))
    return [key.value for key in registry.keys]


def load_params(path: Path = PARAMS_FILE) -> dict:
    if not path.exists():
        raise CatdogError(f"{path} not found: run the stages from the repository root")
    with open(path) as f:
        return yaml.safe_load(f)


def model_config(params: dict) -> tuple[str, dict]:
    """The chosen model's name and entry, checked so that a typo fails in a second, not after an epoch."""
    models = params.get("models") or {}
    name = params.get("model")
    if not isinstance(name, str) or name not in models:
        raise CatdogError(f"model={name!r} is not an entry of `models`; valid: {', '.join(sorted(models))}")
    cfg = models[name]
    for key in MODEL_KEYS:
        if key not in cfg:
            raise CatdogError(f"models.{name}.{key} is missing; every model entry needs {', '.join(MODEL_KEYS)}")
    if cfg["arch"] not in architectures():
        raise CatdogError(f"models.{name}.arch={cfg['arch']!r} is unknown; valid: {', '.join(sorted(architectures()))}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise CatdogError(f"models.{name}.optimizer={cfg['optimizer']!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    if not (isinstance(cfg["lr"], (int, float)) and cfg["lr"] > 0):
        raise CatdogError(f"models.{name}.lr={cfg['lr']!r} must be a positive number")
    if not (isinstance(cfg["epochs"], int) and cfg["epochs"] > 0):
        raise CatdogError(f"models.{name}.epochs={cfg['epochs']!r} must be a positive integer")
    if not ((isinstance(cfg["batch_size"], int) and cfg["batch_size"] > 0) or cfg["batch_size"] == "full"):
        raise CatdogError(f"models.{name}.batch_size={cfg['batch_size']!r} must be a positive integer or 'full'")
    size = cfg["input_size"]
    if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096):
        raise CatdogError(f"models.{name}.input_size={size!r} must be a square side in pixels from 8 to 4096 "
                          f"(data.sizes={params['data']['sizes']} are prepared ahead, others on first use)")
    return name, cfg


def check_synthetic(params: dict) -> None:
    n_images = params["synthetic"].get("n_images")
    if not (isinstance(n_images, int) and n_images >= 2):
        raise CatdogError(f"synthetic.n_images={n_images!r} must be an integer >= 2")


def check_data(params: dict) -> None:
    """The `data` section: the split fractions, the cached sizes and the boxes file."""
    from catdog.dataset import check_fractions  # late: keeps numpy and sklearn out of the plain config helpers

    data = params["data"]
    check_fractions(data["val_fraction"], data["test_fraction"])
    train_fraction = data.get("train_fraction", 1.0)
    if not (isinstance(train_fraction, (int, float)) and 0 < train_fraction <= 1):
        raise CatdogError(f"data.train_fraction={train_fraction!r} must be in (0, 1]: the share of the training "
                          "split to train on")
    sizes = data["sizes"]
    if not (isinstance(sizes, list) and sizes and all(isinstance(s, int) and s >= 8 for s in sizes)):
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


def device_name(params: dict) -> str:
    device = params.get("train", {}).get("device", "auto")
    if device not in DEVICES:
        raise CatdogError(f"train.device={device!r} is unknown; valid: {', '.join(DEVICES)}")
    return device


def precision_name(params: dict, name: str | None = None, cfg: dict | None = None) -> str:
    """train.precision, the dtype of the forward passes. Whether the device has it is known only once the device
    is picked (training.DevicePolicy); given the model's entry, a NumPy model is held to float32, which it uses."""
    precision = params.get("train", {}).get("precision", "auto")
    if precision not in PRECISIONS:
        raise CatdogError(f"train.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if cfg is not None and cfg["arch"] == "numpy" and precision not in ("auto", "float32"):
        raise CatdogError(f"models.{name} (arch numpy) computes in NumPy float32: set train.precision: auto or "
                          "float32")
    return precision


def inference_name(params: dict) -> str:
    """train.inference, the engine of the forward passes that need no gradient (the frozen backbone's features,
    evaluate, predict, the served model). ONNX Runtime runs them in float32 on the CPU, so an explicit onnxruntime
    with a half precision is refused here; whether the device is the CPU is known once it is picked."""
    engine = params.get("train", {}).get("inference", "auto")
    if engine not in INFERENCE:
        raise CatdogError(f"train.inference={engine!r} is unknown; valid: {', '.join(INFERENCE)}")
    precision = params.get("train", {}).get("precision", "auto")
    if engine == "onnxruntime" and precision in ("bfloat16", "float16"):
        raise CatdogError(f"train.inference=onnxruntime runs float32 but train.precision={precision}: set "
                          "train.precision: auto or float32, or train.inference: torch")
    if engine == "onnxruntime" and not onnxruntime_installed():
        raise CatdogError("train.inference=onnxruntime but onnxruntime, onnx or onnxscript is not installed: "
                          "`.venv/bin/pip install onnxruntime onnx onnxscript`, or set train.inference: auto")
    return engine


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


def flat(params: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: how hyperparameters are logged to MLflow."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
