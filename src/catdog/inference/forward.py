"""Forward passes without gradients in ONNX Runtime where it is faster than PyTorch (train.inference).

`runner(model, size, device, precision, engine)` gives a callable `(uint8 images (N, 3, S, S), batch_size) ->
outputs (N, k)` float32 torch tensor on the CPU, the same whichever engine runs it: PyTorch through
predict below, or ONNX Runtime on the file inference.onnx writes (export_onnx, the same exporter as `catdog
export`), fed exactly what predict feeds the model (data.tensors.to_input: uint8 / 127.5 - 1). evaluate,
`catdog predict`, the served MLflow Model and the frozen backbone's feature pass all go through it; attribution
(Grad-CAM, occlusion) needs gradients and stays in PyTorch.

auto picks ONNX Runtime on the CPU in float32 for frozen ImageNet backbones (the feature pass, and a frozen
pretrained model's forward pass: backbone in ONNX Runtime, head in PyTorch), where it was measured faster end to
end (benchmarks/onnx_inference.py --paths, RESULTS.md): their graph is the same for every head trained on it, so
it is exported once and read from the cache ever after. Every other model gets a new checkpoint from each
training, and its export (seconds) costs evaluate more than ONNX Runtime saves, so auto is PyTorch for them, as
on CUDA and MPS, in half precision, and where onnxruntime is not installed (a served model's environment may lack
it). train.inference=onnxruntime runs any model in ONNX Runtime."""

from pathlib import Path

import torch

from catdog.config import check_engine, onnxruntime_installed
from catdog.data.tensors import batch_rows
from catdog.device import CPU, DevicePolicy, autocast_dtype
from catdog.inference.onnx import OnnxRunner
from catdog.models.architectures import frozen_backbone
from catdog.models.numpy_model import NumpyModel
from catdog.paths import ONNX_CACHE, repo_root


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size, device: torch.device, precision: str = "auto") -> torch.Tensor:
    """Model outputs (N, k) for every row of x, in order: column 0 the class logit, column 1 the brightness; in
    float32 on the CPU, whatever precision (train.precision) the forward passes ran in."""
    policy = DevicePolicy(device, model, precision)
    policy.place(model).eval()
    step = batch_rows(batch_size, len(x))
    with policy.autocast():
        outputs = [model(policy.input(policy.rows(x, slice(i, i + step)))) for i in range(0, len(x), step)]
    return torch.cat(outputs).float().cpu()


def engine_for(engine: str, model, device, precision: str = "auto", cli: bool = False,
               backbone: bool = False) -> str:
    """'torch' or 'onnxruntime': what train.inference=engine runs on this device in this precision. cli: the
    errors name catdog predict's options (--inference, --device) instead of params. backbone: model is a frozen
    backbone itself (training.features.backbone_features)."""
    device = torch.device(device)
    check_engine(engine, precision, device.type, cli)
    if engine != "auto":
        return engine
    half = not isinstance(model, NumpyModel) and autocast_dtype(device, precision) is not None
    fits = device.type == "cpu" and not half and (backbone or frozen_backbone(model)) and onnxruntime_installed()
    return "onnxruntime" if fits else "torch"


class TorchRunner:
    engine = "torch"

    def __init__(self, model, device, precision: str):
        self.model, self.device, self.precision = model, torch.device(device), precision

    def __call__(self, x: torch.Tensor, batch_size) -> torch.Tensor:
        return predict(self.model, x, batch_size, self.device, self.precision)


def default_cache() -> Path:
    return repo_root() / ONNX_CACHE


def runner(model, size: int, device=CPU, precision: str = "auto", engine: str = "auto",
           cache: Path | None | str = "repo", cli: bool = False, backbone: bool = False):
    """The forward pass train.inference=engine picks for this model, device and precision. cache: the folder of
    exported files ('repo': .cache/onnx of the repository; None: a temporary one, for a served model)."""
    if engine_for(engine, model, device, precision, cli, backbone) == "torch":
        return TorchRunner(model, device, precision)
    return OnnxRunner(model, size, default_cache() if cache == "repo" else cache)
