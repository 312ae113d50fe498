"""CSV files that DVC plots read: written atomically, read back as dicts."""

import csv
import io
from pathlib import Path

from catdog.io import write_text


def write_rows(path: Path, rows: list[dict], columns) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in columns} for row in rows)
    write_text(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
