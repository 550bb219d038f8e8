"""What a weight decay x dropout grid costs: the members of a 3 x 3 grid over the five methods
against the same number of members at one fixed setting, side by side in one run.

  python benchmarks/regularization_bench.py                     # the paper's shapes
  python benchmarks/regularization_bench.py --dim=512 --rounds=2

The grid's weight decay and dropout rate are traced member values (embaug_jax/train/optim.py):
each kind's one compiled program reads them per member. At one fixed setting they are constants
of the program (`ProgramSpec.fixed`), the program a sweep compiled before they could be swept.
Both sweeps hold 45 members (5 methods x 9: the grid's nine settings, or nine seeds at the
config's setting) in the same three programs' shapes, trained as the engine trains them
(`benchmarks/train_bench.py`'s `trainer`: `driver.compiled_group` on one XLA CPU device per
core). Each is timed in each of `--rounds` interleaved rounds after a compiling warm-up; the
figure is the ratio of the medians per member-epoch (bound <= 1.1x).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import jax
import numpy as np

from embaug_jax import configlib, registry, util
from embaug_jax.train.members import member_groups, member_hparams, with_config_settings

REPO = Path(__file__).resolve().parent.parent
bench = configlib.load_module(REPO / "benchmarks" / "train_bench.py")
WEIGHT_DECAY = (1e-5, 1e-4, 1e-3)
DROPOUT = (0.1, 0.3, 0.5)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=4864)
    p.add_argument("--classes", type=int, default=171)
    p.add_argument("--train-rows", type=int, default=4400)
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed call")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="XLA CPU devices (0: one per core, as `embaug train` does)")
    args = p.parse_args(argv)
    util.split_cpu_into_devices(args.cpu_devices)

    c = configlib.get_config(REPO / "configs" / "default.py")
    n = args.train_rows + args.train_rows // 10
    _, s, on_device = bench.clusters(n, args.dim, args.classes, args.train_rows, trials=1)
    n_train = s.train_idx.shape[1]

    def member(method, **settings):
        own = {n: registry.setting(n).default[0] for n in registry.method(method).reads}
        return dict(method=method, **own, trial=0, **settings)

    methods = registry.method_names(tag="paper")
    sweeps = {
        "3 x 3 grid": [member(m, weight_decay=wd, dropout=d, seed=0)
                       for m in methods for wd, d in itertools.product(WEIGHT_DECAY, DROPOUT)],
        "one fixed setting": [member(m, seed=k) for m in methods for k in range(9)],
    }
    cases = {}
    for name, members in sweeps.items():
        members = with_config_settings(c, members)
        hp = member_hparams(members)
        gos = []
        for g in member_groups(members):
            go, steps = bench.trainer(c, g.kind, args.classes, n_train, on_device,
                                      jax.tree.map(lambda x: x[g.members], hp), args.epochs,
                                      fixed=g.fixed)
            gos.append(go)
            print(f"{name}: {g.name}, {len(g.members)} members, constants "
                  f"{', '.join(k for k, _ in g.fixed)}", flush=True)
        cases[name] = lambda gos=gos: [go() for go in gos]

    print(f"jax {jax.__version__} on {jax.devices()}; data {n} x {args.dim}, {args.classes} "
          f"classes, {args.train_rows} training rows, batch {c.batch_size}, {args.epochs} "
          f"epoch(s) per call, {args.rounds} interleaved rounds; compiled, timing", flush=True)
    wall = {k: [] for k in cases}
    for r in range(args.rounds):
        for k, go in cases.items():
            start = time.perf_counter()
            go()
            wall[k].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + ", ".join(f"{k} {wall[k][-1]:.2f}s" for k in cases),
              flush=True)
    member_epochs = 45 * args.epochs
    med = {k: float(np.median(v)) / member_epochs for k, v in wall.items()}
    print("\n| sweep (45 members) | s per member-epoch (median) |")
    print("|---|---|")
    for k in cases:
        print(f"| {k} | {med[k]:.4f} |")
    ratio = med["3 x 3 grid"] / med["one fixed setting"]
    print(f"\ngrid / fixed per member-epoch: {ratio:.3f}x (bound <= 1.1x)")


if __name__ == "__main__":
    main()
