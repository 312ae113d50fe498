"""Models exported to ONNX: the exporter `catdog export` and train.inference share, and the ONNX Runtime side of
the forward pass without gradients (inference.forward.runner picks it).

The exported file is cached in .cache/onnx, named by a sha256 of the module's structure, its weights, the input
size and the torch version, so the export is paid once per checkpoint (or backbone) and reruns read the very same
graph. Sessions: CPUExecutionProvider, torch.get_num_threads() intra-op threads, one inter-op thread, sequential
execution, deterministic compute: the same params give byte-identical outputs on rerun. The NumPy network (arch
numpy) is exported as the same stack of linear layers and activations in torch."""

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catdog import CatdogError
from catdog.data.tensors import batch_rows, to_input
from catdog.device import CPU
from catdog.files import atomic_path
from catdog.models.architectures import frozen_backbone
from catdog.models.numpy_model import NumpyModel

EXPORT_VERSION = "1"  # bump when export_onnx changes the graphs it writes: old cached files go stale
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}  # numpy_net.ACTIVATIONS as modules


def numpy_as_torch(model: NumpyModel) -> nn.Sequential:
    """The NumPy network as torch layers with its weights: flatten, then per layer Linear (W, b) and its
    activation, except the last layer's: NumpyModel gives the logits, the last pre-activation."""
    net = model.net
    layers: list[nn.Module] = [nn.Flatten()]
    for l, name in enumerate(net.activations, start=1):
        weight, bias = net.params[f"W{l}"], net.params[f"b{l}"]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(weight, np.float32)))
            linear.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)[:, 0]))
        layers.append(linear)
        if l < net.n_layers:
            layers.append(ACTIVATIONS[name]())
    return nn.Sequential(*layers)


def export_onnx(module: nn.Module, size: int, path: Path) -> None:
    """torch.onnx.export (the torch.export-based exporter) with the batch dimension left free."""
    module.eval()
    example = torch.zeros(2, 3, size, size)  # 2, not 1: a batch of 1 would be specialised as a constant
    try:
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["outputs"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    except Exception as error:  # the exporter's report spans pages: its first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CatdogError(f"torch.onnx.export failed ({type(error).__name__}: {first})") from None


def as_module(model) -> nn.Module:
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
    """One session over the exported model; called as inference.forward.predict is, on uint8 (or float) rows. A frozen
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
