"""`catdog compare A B`: what a change did to the model, with the evidence. A and B are each a git revision
(a branch, tag or sha), a DVC experiment's name, or `workspace` (the outputs on disk).

    catdog compare main workspace                   the params that differ, both accuracies with their 95 %
                                                    intervals, every metric's delta, McNemar's exact test and
                                                    the test images that flipped
    catdog compare main workspace --out report/     also report/report.md with curves, confusion matrices and
                                                    the flipped images with both models' heatmaps
    catdog compare cnn-a cnn-b --json               one JSON object (docs/comparing.md lists its keys)
    catdog compare origin/main workspace --fail-on-regression   exit 1 when B is significantly worse than A

Both sides' plots/predictions.csv are paired image by image; a difference that McNemar's test does not find
significant (p >= 0.05) is reported as such and never fails the gate.
"""

import argparse
import json
from pathlib import Path

from catdog import CatdogError
from catdog.analysis.comparison import compare, resolve


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("a", metavar="A", help="the reference: a git revision, a DVC experiment or `workspace`")
    parser.add_argument("b", metavar="B", help="the change, the same kinds")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write DIR/report.md and its PNGs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when B is significantly worse than A in accuracy (paired test, p < 0.05)")
    args = parser.parse_args(argv)
    result = compare(resolve(args.a), resolve(args.b))
    print(json.dumps(result.to_json(), indent=2) if args.json else "\n".join(result.summary_lines()))
    if args.out:
        from catdog.analysis.comparison_report import write_report  # late: matplotlib and torch, for the report

        report = write_report(result, args.out)
        if not args.json:
            print(f"wrote {report}")
    if args.fail_on_regression and result.regression:  # after the report: a pull request still gets it
        raise CatdogError(f"regression: B ({result.b.label}) is significantly worse than A ({result.a.label}): "
                          f"accuracy {result.a.accuracy:.3f} -> {result.b.accuracy:.3f}, "
                          f"{len(result.newly_wrong)} images became wrong and {len(result.newly_right)} right, "
                          f"McNemar p = {result.test.p_value:.3g}")
