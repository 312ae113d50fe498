"""Stage `prepare`: decode, resize and split the image folder `data.images` once into data/prepared."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import warm  # noqa: E402

warm.hand_over(__name__)  # where a warm process is up, this stage runs forked from it, imports done (catdog.warm)

from catdog import entrypoint  # noqa: E402
from catdog.config import check_data, load_params, positive_class  # noqa: E402
from catdog.data.images import discover  # noqa: E402
from catdog.data.prepared import prepare, report  # noqa: E402
from catdog.files import write_json  # noqa: E402
from catdog.paths import DATA_REPORT, PREPARED_DIR  # noqa: E402


def main() -> None:
    params = load_params()
    data = params["data"]
    check_data(params)  # before minutes of decoding, not after (the `check` stage did too; this runs alone)
    sizes = data["sizes"]
    root = Path(data["images"])
    files, labels, classes = discover(root, positive_class(data))
    manifest = prepare(files, labels, classes, root, sizes=sizes, val_fraction=data["val_fraction"],
                       test_fraction=data["test_fraction"], seed=params["seed"], boxes=data.get("boxes"))
    write_json(DATA_REPORT, report(manifest))
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    conflicts = manifest.get("conflicts", [])
    left_out = conflicts + manifest["skipped"] + manifest["duplicates"]
    print(f"prepared {PREPARED_DIR}: classes {classes} (positive {classes[1]}); {counts}; left out "
          f"{manifest['counts']['skipped']} unreadable, {manifest['counts']['duplicates']} duplicate and "
          f"{len(conflicts)} conflicting file(s) (the same bytes under both classes), listed in {DATA_REPORT}")
    for entry in left_out[:20]:
        why = entry.get("reason") or (f"duplicate of {entry['duplicate_of']}" if "duplicate_of" in entry
                                      else f"the same bytes as {entry['same_bytes_as']}, of the other class")
        print(f"  left out {entry['file']}: {why}")
    if len(left_out) > 20:
        print(f"  ... and {len(left_out) - 20} more")
    print(boxes_line(manifest["boxes"]))


def boxes_line(boxes: dict) -> str:
    """One line on the animal boxes; none is not an error, only the localisation figures are then absent."""
    unused = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in boxes["unused"].items() if n)
    unused = f"; rows unused: {unused}" if unused else ""
    if boxes["matched"]:
        per_split = ", ".join(f"{split} {n}" for split, n in boxes["per_split"].items())
        return f"animal boxes for {boxes['matched']} images ({per_split}) from data.boxes={boxes['source']}{unused}"
    if boxes["source"] is None:
        why = "no data.boxes"
    elif not Path(boxes["source"]).is_file():
        why = f"data.boxes={boxes['source']} does not exist"
    else:
        why = f"data.boxes={boxes['source']}: {boxes['rows']} rows, none usable for these images{unused}"
    return f"no animal boxes for these images ({why}): pointing_game and attribution_in_box will be absent"


if __name__ == "__main__":
    entrypoint.run(main)
