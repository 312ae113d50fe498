"""Stage `evaluate`: test-set metrics of the trained model, per-image predictions, and both logged to MLflow; and
the arrays of what `plot` draws of the model (its first layer, where it looks), so that plot needs no torch."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import warm  # noqa: E402

warm.hand_over(__name__)  # where a warm process is up, this stage runs forked from it, imports done (catdog.warm)

from catdog.tracking import runs  # noqa: E402

runs.start_helper()  # first: its MLflow run's helper process imports MLflow while this one imports torch

import torch  # noqa: E402

from catdog import cores, entrypoint  # noqa: E402
from catdog.analysis import attribution  # noqa: E402
from catdog.analysis.metrics import binary_metrics  # noqa: E402
from catdog.config import device_name, inference_name, load_params, precision_name  # noqa: E402
from catdog.data.prepared import load_boxes, load_manifest, load_split  # noqa: E402
from catdog.data.tensors import as_tensors  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.files import write_json, write_npz, write_rows  # noqa: E402
from catdog.inference.forward import runner  # noqa: E402
from catdog.models.architectures import load_checkpoint  # noqa: E402
from catdog.paths import DRAWN_FILE, MODEL_FILE, PREDICTIONS_FILE, TEST_METRICS  # noqa: E402


def main() -> None:
    # first: its helper process starts MLflow while this one evaluates; the test split is its dataset input
    with runs.resumed_run(images=load_params()["data"]["images"]) as run:
        evaluate(run)


def evaluate(run) -> None:
    params = load_params()
    # evaluate.*: how the test pass runs, its own params, so changing them re-runs this stage and never train
    device, precision = pick_device(device_name(params, "evaluate")), precision_name(params, section="evaluate")
    checkpoint, model = load_checkpoint(MODEL_FILE)
    cfg, classes = checkpoint["config"], checkpoint["classes"]
    x, labels, brightness = load_split("test", cfg["input_size"])
    test = as_tensors(x, labels, brightness)
    with cores.turn(device.type == "cpu"):  # parallel experiments test one after the other (catdog.cores)
        # plot's pictures of the model, on the model as loaded: the same arrays plot computed itself before
        drawn = attribution.drawn(model, cfg, test.x, labels, device)
        # evaluate.inference: ONNX Runtime on the CPU where it is faster (inference.forward); attribution stays in
        # torch
        engine = inference_name(params, "evaluate", device.type)
        run_model = runner(model.to(device), cfg["input_size"], device, precision, engine)
        outputs = run_model(test.x, cfg["batch_size"])
        logits, y = outputs[:, 0], test.y
        metrics = binary_metrics(logits, y)
        if outputs.shape[1] > 1:  # a multi-task model also predicts brightness
            metrics["brightness_mae"] = round((outputs[:, 1] - test.brightness).abs().mean().item(), 6)
        boxes = load_boxes("test", cfg["input_size"])
        if boxes is not None:  # does it look at the animal? (attribution for the true class of each image)
            maps = attribution.attribute(model, cfg, test.x, y.numpy(), device)
            metrics.update(attribution.localisation(maps, boxes))
    write_npz(DRAWN_FILE, drawn)
    write_json(TEST_METRICS, metrics)
    files = load_manifest()["splits"]["test"]["files"]
    probabilities = torch.sigmoid(logits).tolist()
    rows = [{"file": f, "actual": classes[int(t)], "predicted": classes[int(p > 0.5)], "probability": round(p, 6)}
            for f, t, p in zip(files, y.tolist(), probabilities)]
    write_rows(PREDICTIONS_FILE, rows, ("file", "actual", "predicted", "probability"))
    run.log_metrics({f"test_{k}": v for k, v in metrics.items() if v is not None})
    run.log_artifact(PREDICTIONS_FILE)
    run.log_dict({"inference": run_model.engine, "precision": precision, "device": str(device)}, "evaluate.json")
    print(f"{checkpoint['model']}: test accuracy {metrics['accuracy']:.4f} on {metrics['n_test']} images "
          f"(f1 {metrics['f1']:.4f}, roc_auc {metrics['roc_auc']}; {run_model.engine})")
    if "pointing_game" in metrics:
        print(f"  {attribution.method(cfg)} peaks inside the animal's box on {metrics['pointing_game']:.1%} of "
              f"{metrics['n_boxes']} images and puts {metrics['attribution_in_box']:.1%} of its positive mass "
              f"there; the box covers {metrics['box_area_share']:.1%} of the image (chance)")


if __name__ == "__main__":
    entrypoint.run(main)
