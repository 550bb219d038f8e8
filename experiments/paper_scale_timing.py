"""The paper's Table-1 protocol, timed on synthetic data of the paper's shape.

  python experiments/paper_scale_timing.py                 # 25 members: 5 methods x 5 trials
  python experiments/paper_scale_timing.py --trials=1      # 5 members, a quicker look

44,000 x 4864 inputs (title BERT | description BERT | EfficientNet-B4), 171 classes, 10% train
(4,400 rows, 34 updates of 128 per epoch), the paper's MLP and schedule; the Table-1 methods at
alpha 0.2 (softness 0.05) on `--trials` splits, trained by `run_sweep` as `embaug train` runs
them (one program per kind; evaluation on the 39,600 validation rows of each trial, streamed).
After compilation it times chunks of 1 and of 3 epochs, each ending with one evaluation,
  T(1) = t_epoch + t_eval,   T(3) = 3 t_epoch + t_eval,
(medians of `--repeats`), extrapolates to 576 epochs with an evaluation every 16, and sets that
against the FLOP limit: the protocol's matmul FLOPs (training: forward, and backward without the
first layer's input gradient; evaluation: forward on the validation rows) at the jnp.dot
2048^3 float32 peak measured in the same run (best of a reading before and after).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

from embaug_jax import augment, configlib, registry, util
from embaug_jax.run import train as run_train
from embaug_jax.train.driver import run_sweep
from embaug_jax.train.members import sweep_members

REPO = Path(__file__).resolve().parent.parent


def matmul_peak(n=2048, repeats=10) -> float:
    """float32 GFLOP/s of jnp.dot on n x n matrices (best of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def chunk_seconds(config, data, members, epochs: int, repeats: int) -> list[float]:
    """Wall times of `repeats` compiled chunks of `epochs` epochs + one evaluation each."""
    c = config.copy_and_resolve_references()
    c.num_epochs = epochs * (repeats + 1)  # one warm-up chunk (compiles), then `repeats`
    c.eval_every = c.chunk_epochs = c.checkpoint_every = epochs
    stamps = []
    run_sweep(c, data, members, progress=False,
              on_chunk=lambda history, done: stamps.append(time.perf_counter()))
    return list(np.diff(stamps))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=576)
    args = parser.parse_args(argv)

    config = configlib.get_config(f"{REPO / 'configs' / 'default.py'}:synthetic")
    config.data.trials = args.trials
    util.split_cpu_into_devices(config.cpu_devices)  # as `embaug train` does
    t0 = time.perf_counter()
    dataset, splits, data, _ = run_train.prepare_data(config)
    n_train, n_val = splits.train_idx.shape[1], splits.val_idx.shape[1]
    print(f"data: {len(dataset)} x {dataset.dim}, {dataset.num_classes} classes, {n_train} train "
          f"/ {n_val} validation rows per trial, {args.trials} trial(s) "
          f"({time.perf_counter() - t0:.0f} s to generate); devices: {jax.devices()}")
    peak = matmul_peak()
    print(f"float32 matmul peak (jnp.dot 2048^3) before: {peak:.1f} GFLOP/s", flush=True)

    config.sweep.methods = registry.method_names(tag="paper")  # at the default grids' settings
    members = sweep_members(config)
    one, three = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same load
        one += chunk_seconds(config, data, members, 1, 1)
        three += chunk_seconds(config, data, members, 3, 1)
        print(f"T(1) {one[-1]:.2f} s, T(3) {three[-1]:.2f} s", flush=True)
    peak = max(peak, matmul_peak())
    t1, t3 = float(np.median(one)), float(np.median(three))
    t_epoch, t_eval = (t3 - t1) / 2, t1 - (t3 - t1) / 2
    evals = args.epochs // args.eval_every
    total = args.epochs * t_epoch + evals * t_eval

    dims = (dataset.dim, *config.model.hidden, dataset.num_classes)
    layers = [2 * a * b for a, b in zip(dims[:-1], dims[1:])]  # FLOPs per row
    steps = n_train // config.batch_size
    rows = sum(augment.kind_rows(registry.method(m["method"]).kind, config.batch_size)
               for m in members)
    train_flops = args.epochs * steps * rows * (2 * layers[0] + 3 * sum(layers[1:]))
    eval_flops = evals * len(members) * n_val * sum(layers)
    limit = (train_flops + eval_flops) / (peak * 1e9)
    print(f"float32 matmul peak, best of before/after: {peak:.1f} GFLOP/s\n")
    print(f"members {len(members)}: {t_epoch:.2f} s per epoch ({t_epoch / len(members):.3f} s "
          f"per member-epoch), {t_eval:.2f} s per evaluation")
    print(f"the protocol ({args.epochs} epochs, an evaluation every {args.eval_every}): "
          f"{(train_flops + eval_flops) / 1e15:.2f} PFLOP ({100 * eval_flops / (train_flops + eval_flops):.0f}% evaluation)")
    print(f"estimated wall time: {total / 3600:.2f} h on this machine; FLOP limit at the peak: "
          f"{limit / 3600:.2f} h; ratio {total / limit:.2f}x (bound <= 1.8x)")


if __name__ == "__main__":
    main(sys.argv[1:])
