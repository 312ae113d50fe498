"""Stage `generate`: write the embedded synthetic cat/dog dataset (data/synthetic) from params `synthetic`, and the
animal's bounding box in each image (data/synthetic_boxes.csv)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import warm  # noqa: E402

warm.hand_over(__name__)  # where a warm process is up, this stage runs forked from it, imports done (catdog.warm)

from catdog import entrypoint  # noqa: E402
from catdog.config import check_synthetic, load_params  # noqa: E402
from catdog.data import synthetic  # noqa: E402
from catdog.files import atomic_dir  # noqa: E402
from catdog.paths import SYNTHETIC_BOXES, SYNTHETIC_DIR  # noqa: E402


def main() -> None:
    check_synthetic(load_params())
    params = load_params()["synthetic"]
    with atomic_dir(SYNTHETIC_DIR) as tmp:
        rows = synthetic.generate(tmp, n_images=params["n_images"], seed=params["seed"], workers=os.cpu_count() or 1)
    synthetic.write_boxes(SYNTHETIC_BOXES, rows)
    print(f"wrote {params['n_images']} images to {SYNTHETIC_DIR} and their animal boxes to {SYNTHETIC_BOXES}")


if __name__ == "__main__":
    entrypoint.run(main)
