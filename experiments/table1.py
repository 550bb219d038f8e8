"""Table 1: the control and the four methods over an alpha grid; the best alpha per method.

  python experiments/table1.py --data=workdir/demo/extract/embeddings --workdir=workdir/table1
  python experiments/table1.py --smoke --workdir=/tmp/table1_smoke

Trains configs/table1.py (5 + 4 x 5 x 5 = 105 members, one compiled program per kind) and
prints the Table-1 analogue (weighted AUC mean +- max deviation over trials, as the paper prints
it, next to the paper's numbers) and the whole alpha grid. The figures of the paper's Figures 3-5
and the reliability diagram are written beside results.md; the other scripts here read the same
run.
"""

import sys

from common import fmt, parse, run_study

from embaug_jax.workdir import Workdir


def main(argv):
    args, overrides = parse(argv, __doc__.splitlines()[0])
    results = run_study("table1.py", args, overrides)
    print("\nalpha grid (weighted AUC, mean over trials):")
    for name, v in results["variants"].items():
        best = results["methods"][v["method"]]["variant"] == name
        print(f"  {name:<45} {fmt(v['weighted_auc']['mean'])}{'  <- best' if best else ''}")
    print(f"\nresults: {Workdir(args.workdir).results_md}")


if __name__ == "__main__":
    main(sys.argv[1:])
