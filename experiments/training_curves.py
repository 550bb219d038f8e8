"""Figure 5: overall and "none" accuracy during training, per method.

  python experiments/training_curves.py --data=workdir/demo/extract/embeddings --workdir=workdir/table1

Uses the Table-1 sweep (trains it, or resumes a finished one in the same workdir); reads
metrics.jsonl (one row per member per evaluation, written while training), writes
`training_curves.csv` (each method's best alpha, mean over trials per evaluation epoch) and prints
the paper's sec. 5.3 diagnostic: how far "none" accuracy falls from its level at the first
evaluation to the end (the control keeps falling -- overconfidence -- while the augmented models
plateau), and the final overall accuracy. The figure itself is fig5_training_curves.png.
"""

import sys
from collections import defaultdict

import numpy as np
from common import parse, run_study, load_metrics, write_csv

from embaug_jax.workdir import Workdir


def _key(alpha, softness):
    return (round(float(alpha or 0.0), 6), round(float(softness or 0.0), 6))


def main(argv):
    args, overrides = parse(argv, __doc__.splitlines()[0])
    results = run_study("table1.py", args, overrides)
    rows = load_metrics(args.workdir)
    curves = defaultdict(lambda: defaultdict(list))  # method -> epoch -> [(overall, none)]
    for method, m in results["methods"].items():
        chosen = _key(m["alpha"], m["softness"])
        for r in rows:
            if r["method"] == method and _key(r["alpha"], r["softness"]) == chosen:
                curves[method][r["epoch"]].append((r["overall_accuracy"], r["none_accuracy"]))
    out = []
    print(f"\n{'method':<16} {'none@first':>10} {'none@end':>9} {'drop':>7} {'overall@end':>11}")
    for method, by_epoch in curves.items():
        epochs = sorted(by_epoch)
        mean = np.array([np.nanmean(np.asarray(by_epoch[e], float), axis=0) for e in epochs])
        out += [[method, e, o, n] for e, (o, n) in zip(epochs, mean)]
        first, end = mean[0, 1], mean[-1, 1]
        print(f"{method:<16} {first:>10.3f} {end:>9.3f} {first - end:>7.3f} {mean[-1, 0]:>11.3f}")
    path = write_csv(f"{args.workdir}/training_curves.csv",
                     ["method", "epoch", "overall_accuracy", "none_accuracy"], out)
    print(f"\n{path}\nfigure: {Workdir(args.workdir).figure('training_curves')}")


if __name__ == "__main__":
    main(sys.argv[1:])
