"""The paper-scale training cost, measured on synthetic data of the paper's shape.

  python experiments/paper_scale_timing.py                     # 1 member and the 5 methods
  python experiments/paper_scale_timing.py --members=1,5,25    # more sweep sizes

44,000 x 4864 inputs (title BERT | description BERT | EfficientNet-B4), 171 classes, 10% train
(4,400 rows, 34 updates of 128 per epoch), the paper's MLP and schedule. For each sweep size
(members vmapped in one program: the Table-1 methods at their default alpha, then more trials)
it times, after compilation, chunks of `1` and of `2` epochs that each end with one evaluation
on the 39,600 validation rows, which separates the cost of an epoch from that of an evaluation:
  T(1) = t_epoch + t_eval,   T(2) = 2 t_epoch + t_eval.
and extrapolates to the paper's 576 epochs with an evaluation every `eval_every` epochs.
Best of `--repeats` chunks each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

from embaug_jax import augment, configlib
from embaug_jax.train import command
from embaug_jax.train import engine as train

REPO = Path(__file__).resolve().parent.parent


def chunk_seconds(config, data, members, epochs: int, repeats: int) -> float:
    """Best wall time of one compiled chunk of `epochs` epochs + one evaluation."""
    c = config.copy_and_resolve_references()
    c.num_epochs = epochs * (repeats + 1)  # one warm-up chunk (compiles), then `repeats`
    c.eval_every = c.chunk_epochs = c.checkpoint_every = epochs
    stamps = []
    train.run_sweep(c, data, members, progress=False,
                    on_chunk=lambda history, done: stamps.append(time.perf_counter()))
    return float(np.min(np.diff(stamps)))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1,5", help="comma-separated sweep sizes")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=576)
    args = parser.parse_args(argv)

    config = configlib.get_config(f"{REPO / 'configs' / 'default.py'}:synthetic")
    config.data.trials = 1
    t0 = time.perf_counter()
    dataset, splits, data, _ = command.prepare_data(config)
    print(f"data: {len(dataset)} x {dataset.dim}, {dataset.num_classes} classes, "
          f"{splits.train_idx.shape[1]} train / {splits.val_idx.shape[1]} validation rows "
          f"({time.perf_counter() - t0:.0f} s to generate); devices: {jax.devices()}")
    print(f"{'members':>7} {'s/epoch':>8} {'s/eval':>7} {'s/epoch/member':>15} "
          f"{f'total for {args.epochs} epochs':>24}")
    for m in (int(x) for x in args.members.split(",")):
        methods = augment.METHOD_NAMES * (m // len(augment.METHOD_NAMES) + 1)
        members = [dict(method=meth, alpha=0.0 if meth == "control" else 0.2,
                        softness=0.05 if meth.startswith("soft_") else 0.0, trial=0, seed=i)
                   for i, meth in enumerate(methods[:m])]
        one = chunk_seconds(config, data, members, 1, args.repeats)
        two = chunk_seconds(config, data, members, 2, args.repeats)
        t_epoch, t_eval = two - one, max(2 * one - two, 0.0)
        total = args.epochs * t_epoch + (args.epochs // args.eval_every) * t_eval
        print(f"{m:>7} {t_epoch:>8.2f} {t_eval:>7.2f} {t_epoch / m:>15.3f} "
              f"{total / 3600:>20.2f} h", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
