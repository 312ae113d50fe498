"""Where the devices differ, in one place: which device, which precision, which memory layout, and where the
images live while a model trains or infers on them."""

import contextlib
import ctypes
import functools

import torch
from torch import nn

from catdog import CatdogError
from catdog.config import check_precision
from catdog.data.tensors import Split, to_input

CPU = torch.device("cpu")
RESIDENT_SHARE = 0.25  # of a GPU's free memory the cached images may fill; the rest is the model's and activations'
# x86 flags of bf16 arithmetic in hardware: AVX512-BF16 (Cooper Lake, Zen 4 and later), AMX-BF16 (Sapphire Rapids
# and later). A CPU with AVX512-BW but neither still runs bf16 autocast, emulated by oneDNN and slower than float32,
# and torch.ops.mkldnn._is_mkldnn_bf16_supported() says yes to it: hence the flags themselves.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def pick_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise CatdogError(f"train.device={name} but no {name} device is available; use auto or cpu")
    return torch.device(name)


@functools.cache  # once per process
def keep_freed_memory() -> None:
    """Make glibc keep freed memory for the next allocation instead of handing it back to the kernel. By default
    every block over 128 KiB (a batch, a layer's gradient, an optimizer's temporaries) is mapped afresh and unmapped
    again at each step, and every page of it faults on first touch: that doubled the time of a logistic-regression
    epoch and cost a third of a `deeper` or `multitask` step (benchmarks/RESULTS.md). Every block now comes from the
    heap, which keeps up to 1 GiB of freed memory for the next step. Elsewhere than glibc (macOS, musl) there is
    nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    libc.mallopt(m_mmap_max, 0)  # raising M_MMAP_THRESHOLD would not do: glibc caps it at 32 MiB
    libc.mallopt(m_trim_threshold, 2 ** 30)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 in hardware (CPU_BF16_FLAGS, read by cpuinfo on any OS). ARM's bf16
    extension is not counted: bf16 autocast has not been measured on an ARM CPU here."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in CPU_BF16_FLAGS)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype of the forward passes for train.precision on this device; None: float32, no autocast.
    auto: on CUDA bf16 where the GPU has it natively, else fp16 (with a gradient scaler); on the CPU and MPS
    float32, so that the same params give the same metrics on every CPU, with bf16 hardware or without.
    bfloat16 and float16 are only taken where the hardware computes in them: emulated, they are slower than
    float32 (bf16 on GPUs before Ampere or CPUs without CPU_BF16_FLAGS; fp16 on any CPU)."""
    check_precision(precision)
    if precision == "float32":
        return None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "bfloat16" and not bf16:
            raise CatdogError("train.precision=bfloat16: this GPU has no native bf16 (Ampere or later); use "
                              "float16 or auto")
        if precision == "auto":
            return torch.bfloat16 if bf16 else torch.float16
        return getattr(torch, precision)
    if precision == "auto":
        return None
    if device.type == "cpu" and precision == "bfloat16":
        if not cpu_has_native_bf16():
            raise CatdogError("train.precision=bfloat16: this CPU has no native bf16 (avx512_bf16/amx_bf16); use "
                              "float32 or auto")
        return torch.bfloat16
    if precision == "float16":  # on the CPU, only a few recent ones have fp16 arithmetic (AVX512-FP16, AMX-FP16)
        raise CatdogError(f"train.precision=float16 runs on CUDA only, not on {device.type}; use float32 or auto")
    raise CatdogError(f"train.precision=bfloat16 runs on CUDA and the CPU only, not on {device.type}; use float32 "
                      "or auto")


class DevicePolicy:
    """Where the devices differ, in one place. Mixed precision as train.precision says (autocast_dtype): by
    default on CUDA only, bf16 where the GPU has it, else fp16 with a gradient scaler. On CUDA the cached images
    either resident on the GPU or gathered batch by batch into pinned memory and copied without blocking. On CUDA
    and the CPU: channels-last weights and inputs for convolutional models, the layout cuDNN's and oneDNN's fastest
    convolutions use (on the CPU: cnn steps 1.45x, mobilenet_v2_finetune 1.3x faster, benchmarks/RESULTS.md). The
    CPU trains from host memory; MPS as PyTorch's defaults. A NumPy model computes in float32 whatever the param."""

    def __init__(self, device, model=None, precision: str = "auto"):
        keep_freed_memory()
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        numpy_model = model is not None and not isinstance(model, nn.Module)
        self.amp_dtype = None if numpy_model else autocast_dtype(self.device, precision)
        convolutional = isinstance(model, nn.Module) and any(isinstance(m, nn.Conv2d) for m in model.modules())
        channels_last = convolutional and self.device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    @property
    def precision(self) -> str:
        return "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    def autocast(self):
        """Forward passes in the mixed-precision dtype; losses and metrics are computed after it, in float32."""
        return torch.autocast(self.device.type, self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none. A disabled
        scaler passes the loss and the optimizer step through unchanged."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def place(self, model):
        """The model on the device, channels-last if convolutional (CUDA, CPU); a NumPy model stays where it is."""
        return model.to(self.device, memory_format=self.memory_format) if isinstance(model, nn.Module) else model

    def keep(self, *splits: Split) -> tuple[Split, ...]:
        """The splits to gather batches from. On CUDA they move to the GPU once when they fill under RESIDENT_SHARE
        of its free memory, so that no batch crosses the host link again."""
        if not self.cuda:
            return splits
        free, _ = torch.cuda.mem_get_info(self.device)
        resident = sum(t.nbytes for split in splits for t in split) < RESIDENT_SHARE * free
        return tuple(Split(*(t.to(self.device) for t in split)) for split in splits) if resident else splits

    def rows(self, tensor: torch.Tensor, index) -> torch.Tensor:
        """tensor[index] on the device. Rows going from host memory to a GPU are gathered into pinned memory first:
        only a copy from pinned memory runs asynchronously (PyTorch's pinned-memory cache holds the buffer until
        the copy is done). index_select, not tensor[index]: five times faster for rows of images on the CPU."""
        rows = tensor.index_select(0, index) if isinstance(index, torch.Tensor) else tensor[index]
        if self.cuda and not rows.is_cuda:
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=self.cuda)

    def batch(self, split: Split, index) -> Split:
        return Split(*(self.rows(t, index) for t in split))

    def input(self, images: torch.Tensor) -> torch.Tensor:
        return to_input(images, self.device, self.memory_format)
