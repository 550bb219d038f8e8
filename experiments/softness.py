"""Figure 6: Soft E-Stitchup at softness 0.01, 0.05, 0.1, 0.2 against E-Stitchup (alpha 0.3).

  python experiments/softness.py --data=workdir/demo/extract/embeddings --workdir=workdir/softness

Trains configs/softness.py and prints, per softness, the weighted AUC and the overall and
"none" accuracy at the 0.6 threshold: the paper (sec. 5.4) finds overall accuracy falling and
"none" accuracy rising with softness while the AUC stays flat from 0.05 up. The figure itself is
fig6_softness.png.
"""

import sys

from common import fmt, parse, run_study

from embaug_jax.workdir import Workdir


def main(argv):
    args, overrides = parse(argv, __doc__.splitlines()[0])
    results = run_study("softness.py", args, overrides)
    print(f"\n{'variant':<45} {'w. AUC':>7} {'overall':>8} {'none':>7}")
    for name, v in results["variants"].items():
        print(f"{name:<45} {fmt(v['weighted_auc']['mean']):>7} "
              f"{fmt(v['overall_accuracy']['mean'], 3):>8} {fmt(v['none_accuracy']['mean'], 3):>7}")
    print(f"\nfigure: {Workdir(args.workdir).figure('softness')}")


if __name__ == "__main__":
    main(sys.argv[1:])
