"""Stage `prepare`: decode, resize and split the image folder `data.images` once into data/prepared."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import cli  # noqa: E402
from catdog.config import load_params  # noqa: E402
from catdog.dataset import prepare  # noqa: E402
from catdog.paths import PREPARED_DIR  # noqa: E402
from catdog.images import discover  # noqa: E402


def main() -> None:
    params = load_params()
    data = params["data"]
    root = Path(data["images"])
    files, labels, classes = discover(root)
    manifest = prepare(files, labels, classes, root, sizes=data["sizes"], val_fraction=data["val_fraction"],
                       test_fraction=data["test_fraction"], seed=params["seed"])
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    print(f"prepared {PREPARED_DIR}: classes {classes}; {counts}; skipped {len(manifest['skipped'])} unreadable file(s)")
    for entry in manifest["skipped"]:
        print(f"  skipped {entry['file']}: {entry['reason']}")


if __name__ == "__main__":
    cli.run(main)
