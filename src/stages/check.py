"""Stage `check`: every param checked in a couple of seconds, before any other stage runs.

DVC deletes a stage's outputs before it runs the stage, so a bad param found by the stage itself comes too late
for them. This stage runs first (the others depend on its output) and stops `dvc repro` with one clear line
while every output already produced is still in place."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import warm  # noqa: E402

warm.hand_over(__name__)  # where a warm process is up, this stage runs forked from it, imports done (catdog.warm)

from catdog import entrypoint  # noqa: E402
from catdog.config import (  # noqa: E402
    check_data,
    check_evaluate,
    check_synthetic,
    check_train,
    device_name,
    inference_name,
    load_params,
    precision_name,
    processes,
    training_seed,
)
from catdog.files import write_text  # noqa: E402
from catdog.models.registry import check_model  # noqa: E402  (no torch: the architectures' keys, declared)
from catdog.paths import PARAMS_CHECKED  # noqa: E402


def main() -> None:
    params = load_params()
    training_seed(params)
    check_synthetic(params)
    check_data(params)
    check_train(params)
    name, cfg = check_model(params)
    device_name(params)
    precision_name(params, name, cfg)
    inference_name(params)
    processes(params, name, cfg)
    check_evaluate(params, name, cfg)
    write_text(PARAMS_CHECKED, "ok\n")  # constant, so a passing check never re-runs the stages after it
    print(f"params.yaml is valid (model {name})")


if __name__ == "__main__":
    entrypoint.run(main)
