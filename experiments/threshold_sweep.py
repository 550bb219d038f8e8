"""Figure 3: overall and "none" accuracy against the confidence threshold, per method.

  python experiments/threshold_sweep.py --data=workdir/demo/extract/embeddings --workdir=workdir/table1

Uses the Table-1 sweep (trains it, or resumes a finished one in the same workdir), writes
`threshold_sweep.csv` (per method's best alpha: mean, min and max over trials at each threshold)
and prints, per method, the threshold where overall and "none" accuracy cross -- the balance
point the paper discusses (about 0.65 without label softening, 0.5 with it) -- and the best
overall accuracy over thresholds. The figure itself is fig3_threshold_sweep.png.
"""

import sys

import numpy as np
from common import fmt, parse, run_study, write_csv

from embaug_jax.workdir import Workdir


def crossing(thresholds, overall, none):
    """The first threshold where "none" accuracy reaches overall accuracy (linear interpolation)."""
    diff = np.asarray(none, float) - np.asarray(overall, float)
    for i in range(1, len(diff)):
        if np.isfinite(diff[i - 1:i + 1]).all() and diff[i - 1] < 0 <= diff[i]:
            t0, t1 = thresholds[i - 1], thresholds[i]
            return t0 + (t1 - t0) * (-diff[i - 1]) / (diff[i] - diff[i - 1])
    return None


def main(argv):
    args, overrides = parse(argv, __doc__.splitlines()[0])
    results = run_study("table1.py", args, overrides)
    rows = []
    print(f"\n{'method':<16} {'alpha':>5} {'crossing':>9} {'acc there':>9} {'max overall':>12}")
    for method, m in results["methods"].items():
        s = m["threshold_sweep"]
        t = np.asarray(s["thresholds"])
        for i, thr in enumerate(t):
            rows.append([method, m["alpha"], f"{thr:.2f}"] + [
                s[f"{k}_{stat}"][i] for k in ("overall", "none") for stat in ("mean", "min", "max")])
        cross = crossing(t, s["overall_mean"], s["none_mean"])
        at = None if cross is None else float(np.interp(cross, t, s["overall_mean"]))
        best = int(np.nanargmax(np.asarray(s["overall_mean"], float)))
        print(f"{method:<16} {m['alpha']:>5g} {fmt(cross, 2):>9} {fmt(at, 3):>9} "
              f"{s['overall_mean'][best]:>7.3f} @{t[best]:.2f}")
    path = write_csv(f"{args.workdir}/threshold_sweep.csv",
                     ["method", "alpha", "threshold", "overall_mean", "overall_min", "overall_max",
                      "none_mean", "none_min", "none_max"], rows)
    print(f"\n{path}\nfigure: {Workdir(args.workdir).figure('threshold_sweep')}")


if __name__ == "__main__":
    main(sys.argv[1:])
