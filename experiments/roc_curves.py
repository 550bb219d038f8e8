"""Figure 4: the support-weighted mean ROC curve over all classes plus "none", per method.

  python experiments/roc_curves.py --data=workdir/demo/extract/embeddings --workdir=workdir/table1

Uses the Table-1 sweep (trains it, or resumes a finished one in the same workdir), writes
`roc_curves.csv` (each method's best-alpha curve on a common FPR grid, averaged over trials) and
prints each curve's area next to the method's weighted AUC and the TPR at a few FPRs: the
control's sharp corner (sec. 5.3) shows as a TPR that barely moves between small FPRs.
The figure itself is fig4_roc.png.
"""

import sys

import numpy as np
from common import fmt, parse, run_study, write_csv

from embaug_jax.workdir import Workdir

FPRS = (0.01, 0.05, 0.1, 0.2)


def main(argv):
    args, overrides = parse(argv, __doc__.splitlines()[0])
    results = run_study("table1.py", args, overrides)
    rows = []
    header = " ".join(f"{'TPR@' + format(f, 'g'):>9}" for f in FPRS)
    print(f"\n{'method':<16} {'area':>7} {'w. AUC':>7} {header}")
    for method, m in results["methods"].items():
        fpr = np.asarray(m["roc"]["fpr"], float)
        tpr = np.asarray(m["roc"]["tpr_mean"], float)
        rows += [[method, m["alpha"], f, t] for f, t in zip(fpr, tpr)]
        area = float(np.trapezoid(tpr, fpr))
        at = " ".join(f"{np.interp(f, fpr, tpr):>9.4f}" for f in FPRS)
        print(f"{method:<16} {area:>7.4f} {fmt(m['weighted_auc']['mean']):>7} {at}")
    path = write_csv(f"{args.workdir}/roc_curves.csv", ["method", "alpha", "fpr", "tpr_mean"], rows)
    print(f"\n{path}\nfigure: {Workdir(args.workdir).figure('roc')}")


if __name__ == "__main__":
    main(sys.argv[1:])
