"""Stage `train`: train the model named by param `model` on the cached tensors, tracked as an MLflow run.

With train.processes > 1, or started by torchrun (`torchrun --nproc-per-node 4 src/stages/train.py`), several
processes train it together (training.distributed); rank 0 alone writes the outputs and the MLflow run."""

import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import warm  # noqa: E402
from catdog.config import several_processes  # noqa: E402

# where a warm process is up, this stage runs forked from it, imports done (catdog.warm); not one that torchrun will
# replace (training.distributed.relaunch): torchrun stays the process DVC started, in its process group
warm.hand_over(__name__, stay=several_processes())

from catdog.tracking import runs  # noqa: E402

runs.start_helper()  # first: its MLflow run's helper process imports MLflow while this one imports torch

import torch  # noqa: E402

from catdog import cores, entrypoint  # noqa: E402
from catdog.config import (  # noqa: E402
    device_name,
    flat,
    inference_name,
    load_params,
    model_config,
    precision_name,
    processes,
    training_seed,
)
from catdog.data.prepared import load_manifest, load_split, report, train_subset  # noqa: E402
from catdog.data.tensors import as_tensors  # noqa: E402
from catdog.device import DevicePolicy, pick_device  # noqa: E402
from catdog.files import write_bytes, write_json, write_rows  # noqa: E402
from catdog.models.architectures import build_model  # noqa: E402
from catdog.paths import HISTORY_FILE, MODEL_FILE, TRAIN_METRICS  # noqa: E402
from catdog.training import distributed  # noqa: E402
from catdog.training.loop import fit, seed_everything  # noqa: E402
from catdog.tuning import trial as tune_trial  # noqa: E402


def main() -> None:
    params = load_params()
    name, cfg = model_config(params)
    device = pick_device(device_name(params))
    n_processes = processes(params, name, cfg)
    if n_processes > 1 and not distributed.under_torchrun():
        runs.stop_helper()  # rank 0 of torchrun's processes starts its own
        distributed.relaunch(n_processes, device)  # this command again, in n_processes processes under torchrun
    with distributed.process_group(device) as device:
        train_and_log(params, name, cfg, device)


def train_and_log(params: dict, name: str, cfg: dict, device: torch.device) -> None:
    seed = training_seed(params)  # weights, batch order, augmentation; params["seed"] keeps the split and subset
    seed_everything(seed)
    fraction = params["data"].get("train_fraction", 1.0)
    train = as_tensors(*train_subset(*load_split("train", cfg["input_size"]), fraction, params["seed"]))
    val = as_tensors(*load_split("val", cfg["input_size"]))
    model = build_model(cfg, name)
    precision = precision_name(params, name, cfg)
    used = DevicePolicy(device, model, precision).precision  # what auto picks here; a device without it fails now
    inference = inference_name(params)  # the frozen backbone's feature pass: ONNX Runtime or PyTorch
    if distributed.rank() > 0:  # its part of every batch; rank 0 writes the outputs and logs to MLflow
        fit(model, cfg, train, val, device, seed, precision=precision, inference=inference)
        return
    hyperparameters = {"model": name, "seed": params["seed"], "train_seed": seed, "device": str(device),
                       "precision": used, "inference": inference,
                       **flat(cfg), **flat(params["data"], "data."), "n_train": len(train.x), "n_val": len(val.x),
                       "processes": distributed.size()}
    trial = tune_trial.current()  # a trial of `catdog tune`: report each epoch, stop when pruned
    report_epoch = tune_trial.Reporter(trial) if trial else None
    with runs.training_run(name, hyperparameters, sweep=str(params["train"].get("sweep") or ""),
                           trial=trial, images=params["data"]["images"]) as run:
        def on_epoch(row: dict) -> None:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
            if report_epoch:
                report_epoch(row["epoch"], row["val_accuracy"])

        with cores.turn(device.type == "cpu"):  # parallel experiments train one after the other (catdog.cores)
            start = time.perf_counter()
            history = fit(model, cfg, train, val, device, seed, on_epoch=on_epoch, precision=precision,
                          inference=inference)
            seconds = time.perf_counter() - start
        checkpoint = {"model": name, "config": cfg, "classes": load_manifest()["classes"],
                      "best_epoch": history.best_epoch, "state_dict": history.best_state}
        buffer = io.BytesIO()  # saved from memory: a file name would end up inside the archive, and in its hash
        torch.save(checkpoint, buffer)
        write_bytes(MODEL_FILE, buffer.getvalue())
        write_rows(HISTORY_FILE, history.rows, list(history.rows[0]))
        best = history.rows[history.best_epoch - 1]
        summary = {"best_epoch": history.best_epoch, "best_val_accuracy": round(best["val_accuracy"], 6),
                   "best_val_loss": round(best["val_loss"], 6), "train_seconds": round(seconds, 2),
                   "n_parameters": sum(p.numel() for p in model.parameters())}
        write_json(TRAIN_METRICS, summary)
        run.log_metrics({k: summary[k] for k in ("best_epoch", "best_val_accuracy", "train_seconds")})
        run.log_model(MODEL_FILE, example=val.x[0].numpy())  # the MLflow Model `model`, the checkpoint inside
        run.log_artifact(HISTORY_FILE)
        run.log_dict(report(load_manifest()), "data_report.json")
    print(f"{name}: best val accuracy {best['val_accuracy']:.4f} at epoch {history.best_epoch}/{cfg['epochs']}, "
          f"{seconds:.1f} s on {device} in {used}")


if __name__ == "__main__":
    entrypoint.run(main)
