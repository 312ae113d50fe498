"""`catdog <command>` (or `python -m catdog <command>`): the project's commands beside the DVC stages.

    catdog predict IMAGE|FOLDER ...    classify your own photos with a trained model
    catdog explain IMAGE|FOLDER --out DIR   where the model looks in them: a heatmap over each
    catdog leaderboard                 every experiment's test accuracy as a Markdown table + overlaid curves
    catdog compare A B [--out DIR]     what a change did: paired test, deltas, flipped images (revisions, experiments)
    catdog best --sweep NAME           the grid point with the best validation accuracy, and its test accuracy
    catdog register [--sweep NAME]     that experiment's MLflow Model as version N of `catdog`, alias champion
    catdog repeat --seeds N -S model=X one experiment over N training seeds, on the same test set
    catdog tune --model NAME           a Bayesian search, each trial a DVC experiment and an MLflow child run
    catdog ui                          the MLflow UI on the runs table, the compared metrics shown
    catdog export --format onnx        the trained model as models/model.onnx, checked in ONNX Runtime
"""

import importlib
import sys

from catdog import entrypoint

# each catdog.commands.<verb>
COMMANDS = ("predict", "explain", "leaderboard", "compare", "best", "register", "repeat", "tune", "ui", "export")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        entrypoint.run(lambda: print(__doc__))  # `catdog --help | head`: a closed pipe is not an error
        return
    if not argv or argv[0] not in COMMANDS:
        sys.exit(f"usage: catdog {{{','.join(COMMANDS)}}} ...  (catdog <command> --help for its options)")
    module = importlib.import_module(f"catdog.commands.{argv[0]}")
    entrypoint.run(lambda: module.main(argv[1:]))


if __name__ == "__main__":
    main()
