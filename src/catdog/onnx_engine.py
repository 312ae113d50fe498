"""Forward passes without gradients in ONNX Runtime where it is faster than PyTorch (train.inference).

`runner(model, size, device, precision, engine)` gives a callable `(uint8 images (N, 3, S, S), batch_size) ->
outputs (N, k)` float32 torch tensor on the CPU, the same whichever engine runs it: PyTorch through
training.predict, or ONNX Runtime on the file catdog.export writes (export_onnx, the same exporter as `catdog
export`), fed exactly what training.predict feeds the model (training.to_input: uint8 / 127.5 - 1). evaluate,
`catdog predict`, the served MLflow Model and the frozen backbone's feature pass all go through it; attribution
(Grad-CAM, occlusion) needs gradients and stays in PyTorch.

auto picks ONNX Runtime on the CPU in float32 for frozen ImageNet backbones (the feature pass, and a frozen
pretrained model's forward pass: backbone in ONNX Runtime, head in PyTorch), where it was measured faster end to
end (benchmarks/onnx_inference.py --paths, RESULTS.md): their graph is the same for every head trained on it, so
it is exported once and read from the cache ever after. Every other model gets a new checkpoint from each
training, and its export (seconds) costs evaluate more than ONNX Runtime saves, so auto is PyTorch for them, as
on CUDA and MPS, in half precision, and where onnxruntime is not installed (a served model's environment may lack
it). train.inference=onnxruntime runs any model in ONNX Runtime.

The exported file is cached in .cache/onnx, named by a sha256 of the module's structure, its weights, the input
size and the torch version, so the export is paid once per checkpoint (or backbone) and reruns read the very same
graph. Sessions: CPUExecutionProvider, torch.get_num_threads() intra-op threads, one inter-op thread, sequential
execution, deterministic compute: the same params give byte-identical outputs on rerun."""

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catdog import CatdogError
from catdog.config import INFERENCE, onnxruntime_installed
from catdog.io import atomic_path
from catdog.numpy_model import NumpyModel
from catdog.paths import ONNX_CACHE, repo_root
from catdog.training import autocast_dtype, batch_rows, to_input
from catdog.training import predict as torch_predict

CPU = torch.device("cpu")
EXPORT_VERSION = "1"  # bump when catdog.export.export_onnx changes the graphs it writes: old cached files go stale


def frozen_backbone(model) -> bool:
    """A pretrained model with `freeze: true`: its backbone, the costly part, never changes in training."""
    return bool(getattr(model, "frozen", False)) and isinstance(getattr(model, "backbone", None), nn.Module)


def engine_for(engine: str, model, device, precision: str = "auto", cli: bool = False,
               backbone: bool = False) -> str:
    """'torch' or 'onnxruntime': what train.inference=engine runs on this device in this precision. cli: the
    errors name catdog predict's options (--inference, --device) instead of params. backbone: model is a frozen
    backbone itself (training.backbone_features)."""
    def fix(key: str, value: str) -> str:
        return f"--{key} {value}" if cli else f"train.{key}: {value}"

    name = "--inference onnxruntime" if cli else "train.inference=onnxruntime"
    if engine not in INFERENCE:
        raise CatdogError(f"{'--inference ' if cli else 'train.inference='}{engine!r} is unknown; valid: "
                          f"{', '.join(INFERENCE)}")
    device = torch.device(device)
    half = not isinstance(model, NumpyModel) and autocast_dtype(device, precision) is not None
    if engine == "auto":
        reusable = backbone or frozen_backbone(model)
        fits = device.type == "cpu" and not half and reusable and onnxruntime_installed()
        return "onnxruntime" if fits else "torch"
    if engine == "onnxruntime":
        if device.type != "cpu":
            raise CatdogError(f"{name} runs on the CPU, not on {device.type}: set {fix('inference', 'auto')} or "
                              f"torch, or {fix('device', 'cpu')}")
        if half:
            raise CatdogError(f"{name} runs float32, not train.precision={precision}: set train.precision: auto "
                              f"or float32, or {fix('inference', 'torch')}")
        if not onnxruntime_installed():
            raise CatdogError(f"{name} but onnxruntime, onnx or onnxscript is not installed: `.venv/bin/pip "
                              f"install onnxruntime onnx onnxscript`, or set {fix('inference', 'auto')}")
    return engine


def as_module(model) -> nn.Module:
    from catdog.export import numpy_as_torch  # late: export imports dataset and training

    return numpy_as_torch(model) if isinstance(model, NumpyModel) else model


def model_key(module: nn.Module, size: int) -> str:
    """sha256 of what the exported graph depends on: structure (activations have no weights), every weight and
    buffer with its name, dtype and shape, the input size, the exporter (torch version, EXPORT_VERSION)."""
    digest = hashlib.sha256(f"{module}\n{size}\n{torch.__version__}\n{EXPORT_VERSION}\n".encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def onnx_file(model, size: int, cache: Path | None) -> Path:
    """The model exported for ONNX Runtime: cache/<key>.onnx, exported (atomically) if it is not there yet."""
    from catdog.export import export_onnx

    module = as_module(model)
    path = Path(cache) / f"{model_key(module, size)}.onnx"
    if not path.is_file():
        was_training = module.training
        with atomic_path(path) as tmp:
            export_onnx(module.to(CPU), size, tmp)  # sets eval mode: the frozen backbone is exported as it infers
        module.train(was_training)
    return path


def session(path: Path):
    """An InferenceSession with fixed settings, so that reruns give byte-identical outputs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many as PyTorch uses: a fair and stable choice
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only: its warnings about unused initializers say nothing to a user
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """One session over the exported model; called as training.predict is, on uint8 (or float) rows. A frozen
    pretrained model: the session runs its backbone (the file every head on it shares) and PyTorch its head."""

    engine = "onnxruntime"

    def __init__(self, model, size: int, cache: Path | None):
        self.head = model.head.eval() if frozen_backbone(model) else None
        graph = model.backbone if self.head is not None else model
        if cache is None:  # a served model: the file lives only until the session has read it
            with tempfile.TemporaryDirectory() as tmp:
                self.session = session(onnx_file(graph, size, Path(tmp)))
        else:
            self.session = session(onnx_file(graph, size, cache))
        self.input = self.session.get_inputs()[0].name

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch_size) -> torch.Tensor:
        step = batch_rows(batch_size, len(x))
        outputs = [self.session.run(None, {self.input: to_input(x[i:i + step], CPU).contiguous().numpy()})[0]
                   for i in range(0, len(x), step)]
        outputs = torch.from_numpy(np.concatenate(outputs).astype(np.float32, copy=False))
        return self.head.to(CPU)(outputs).float() if self.head is not None else outputs


class TorchRunner:
    engine = "torch"

    def __init__(self, model, device, precision: str):
        self.model, self.device, self.precision = model, torch.device(device), precision

    def __call__(self, x: torch.Tensor, batch_size) -> torch.Tensor:
        return torch_predict(self.model, x, batch_size, self.device, self.precision)


def default_cache() -> Path:
    return repo_root() / ONNX_CACHE


def runner(model, size: int, device=CPU, precision: str = "auto", engine: str = "auto",
           cache: Path | None | str = "repo", cli: bool = False, backbone: bool = False):
    """The forward pass train.inference=engine picks for this model, device and precision. cache: the folder of
    exported files ('repo': .cache/onnx of the repository; None: a temporary one, for a served model)."""
    if engine_for(engine, model, device, precision, cli, backbone) == "torch":
        return TorchRunner(model, device, precision)
    return OnnxRunner(model, size, default_cache() if cache == "repo" else cache)


def predict(model, x: torch.Tensor, batch_size, device=CPU, precision: str = "auto", engine: str = "auto",
            cache: Path | None | str = "repo") -> torch.Tensor:
    """training.predict in the engine train.inference picks: outputs (N, k), float32, on the CPU."""
    return runner(model, x.shape[-1], device, precision, engine, cache)(x, batch_size)
