"""`catdog leaderboard`: the finished DVC experiments ranked by test accuracy, as a Markdown table and a PNG of
their validation-accuracy curves overlaid: leaderboard.md and leaderboard.png in --out, by default leaderboard/ (which
git ignores: ranking your experiments changes no committed file).

Each accuracy carries its 95 % interval; rows the test set cannot tell from the top row are marked `tie` (McNemar's
exact test on the paired test predictions), and rows it cannot tell from the majority class `no` under "above
chance". Experiments that differ only in train.seed (`catdog repeat`) are one row: mean ± sd, min–max, n.

    catdog leaderboard                      the experiments of the current commit
    catdog leaderboard -A --match '^bench-' every commit's experiments whose name matches
    catdog leaderboard --out reports/       anywhere else
"""

import argparse
from pathlib import Path

from catdog import CatdogError
from catdog.analysis import figures
from catdog.analysis.experiments import finished, history, predictions
from catdog.analysis.leaderboard import fold, ranked, select, table
from catdog.files import write_text
from catdog.paths import repo_root

DEFAULT_OUT = Path("leaderboard")  # in .gitignore


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD")
    parser.add_argument("--match", metavar="REGEX", help="only experiments whose name matches")
    parser.add_argument("--sweep", metavar="NAME", help="only the experiments run with -S train.sweep=NAME")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for leaderboard.md/.png, relative to the repository (default {DEFAULT_OUT}/)")
    args = parser.parse_args(argv)
    done, not_done = finished(args.all_commits)
    experiments = select(done, args.match, args.sweep)
    rows = ranked(fold(experiments, {e.rev: predictions(e) for e in experiments}))
    not_done = [e.name for e in select(not_done, args.match, args.sweep)]
    if not experiments:
        raise CatdogError("no finished DVC experiment to rank" + (" matches" if args.match or args.sweep else "")
                          + "; run some first, e.g. `dvc exp run -S model=cnn`, or pass -A for older commits'")
    out = args.out if args.out.is_absolute() else repo_root() / args.out
    markdown, png = out / "leaderboard.md", out / "leaderboard.png"
    curves = [(f"{e.name} ({e.model}): {e.test['accuracy']:.3f}", history(e)) for row in rows for e in row.runs]
    figures.validation_curves(curves, f"Validation accuracy of {len(curves)} experiments "
                            "(legend: test accuracy, best first)", png)
    text = table(rows)
    write_text(markdown, f"# Leaderboard: test accuracy\n\n![validation accuracy]({png.name})\n\n{text}")
    print(text)
    if not_done:
        print(f"not ranked (no test metrics yet): {', '.join(not_done)}")
    print(f"wrote {markdown} and {png}")
