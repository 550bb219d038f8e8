"""Training throughput of the sweep engine, side by side in one run.

  python benchmarks/train_bench.py                   # the paper's shapes, 2 epochs per run
  python benchmarks/train_bench.py --dim=512 --epochs=2 --sequential=5   # a quicker look

Rows (all at the paper's MLP and batch: D -> 250 -> 250 -> C, batch 128, 4,400 training rows):
  jax, 1 member          one compiled program, one member (E-Mixup)
  jax, 25 vmapped        5 methods x 5 trials as one vmapped program
  jax, 25 sequential     the 1-member program run once per member (the same 25 members)
  torch eager, 1 member  plain PyTorch CPU: the same MLP, AdamW, cyclic lr, E-Mixup, BCE
Examples/s counts input rows consumed (batch x steps x members). GFLOP/s counts the matmul
FLOPs executed (forward; backward = 2x forward except the first layer, whose input gradient is
not needed; JAX: all B rows of the fixed-size batch, padding included, plus the evaluation;
torch: the B/2 mixed rows it computes), against this machine's measured float32 matmul peak
(jnp.dot, 2048^3, best of a reading before and after).
Compilation is excluded (one warm-up call each); the evaluation at the end of each run is
included (on a validation split of 10% of the training size, so it stays small).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax import augment, configlib
from embaug_jax.train import engine as train
from embaug_jax.train.splits import make_splits
from embaug_jax.train.synthetic import make_synthetic

REPO = Path(__file__).resolve().parent.parent


def matmul_peak(n=2048, repeats=10) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def step_flops(batch, dims) -> float:
    """Matmul FLOPs of one training step: forward, and backward without the input gradient."""
    layers = [2 * batch * a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2 * layers[0] + 3 * sum(layers[1:])


def eval_flops(rows, dims) -> float:
    return sum(2 * rows * a * b for a, b in zip(dims[:-1], dims[1:]))


def jax_runner(config, data):
    """A compiled `go(hp)`: init + train + evaluate the members of `hp` (one program per M)."""
    program = train.make_program(train.ProgramSpec.from_config(
        config, data.seen_mask.shape[1], data.train_idx.shape[1]))
    init = jax.jit(jax.vmap(program.init, in_axes=(None, 0, None)))
    run = jax.jit(jax.vmap(program.run, in_axes=(None, 0, 0, None, None)), static_argnums=4)
    key = jax.random.key(0)
    periods = config.num_epochs // config.eval_every

    def go(hp):
        state = init(key, hp, data)
        state, metrics = run(key, hp, state, data, periods)
        jax.block_until_ready(metrics)

    return go, program.steps_per_epoch


def torch_epochs(x, labels, train_rows, seen, config, epochs) -> float:
    """Plain PyTorch eager E-Mixup training of the same MLP; returns seconds for `epochs`."""
    import torch

    torch.manual_seed(0)
    d, c = x.shape[1], seen.shape[0]
    h1, h2 = config.model.hidden
    model = torch.nn.Sequential(
        torch.nn.Linear(d, h1), torch.nn.Dropout(0.3), torch.nn.ReLU(),
        torch.nn.Linear(h1, h2), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(h2, c))
    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr_min,
                            weight_decay=config.optim.weight_decay)
    steps = len(train_rows) // config.batch_size
    half = config.optim.half_cycle_epochs * steps
    sched = torch.optim.lr_scheduler.CyclicLR(opt, config.optim.lr_min, config.optim.lr_max,
                                              step_size_up=half, cycle_momentum=False)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    mask = torch.from_numpy(seen)
    beta = torch.distributions.Beta(0.2, 0.2)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.from_numpy(train_rows)[torch.randperm(len(train_rows))]
        for i in range(steps):
            idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
            xb = xt[idx]
            yb = torch.nn.functional.one_hot(yt[idx], c).float()
            shuffle = torch.randperm(len(idx))
            a, b = shuffle[: len(idx) // 2], shuffle[len(idx) // 2:]
            lam = beta.sample((len(a), 1))
            xm = lam * xb[a] + (1 - lam) * xb[b]
            ym = lam * yb[a] + (1 - lam) * yb[b]
            logits = model(xm)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[:, mask], ym[:, mask])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=4864)
    p.add_argument("--classes", type=int, default=171)
    p.add_argument("--train-rows", type=int, default=4400)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sequential", type=int, default=25,
                   help="how many of the 25 members to run one after another (time scaled to 25)")
    args = p.parse_args(argv)

    c = configlib.get_config(REPO / "configs" / "default.py")
    c.num_epochs = c.eval_every = c.chunk_epochs = c.checkpoint_every = args.epochs
    n = args.train_rows + args.train_rows // 10
    ds = make_synthetic(0, n, args.dim, args.classes, imbalance=1.0)
    s = make_splits(ds.labels, args.classes, trials=5, train_fraction=args.train_rows / n)
    data = train.TrainData(jnp.asarray(ds.embeddings), jnp.asarray(ds.labels),
                           jnp.asarray(s.train_idx), jnp.asarray(s.val_idx),
                           jnp.asarray(s.seen_mask))
    members = [dict(method=m, alpha=0.2 if m != "control" else 0.0,
                    softness=0.05 if m.startswith("soft") else 0.0, trial=t, seed=0)
               for m in augment.METHOD_NAMES for t in range(5)]
    one = [members[5]]  # e_mixup, trial 0

    peak = matmul_peak()
    dims = (args.dim, *c.model.hidden, args.classes)
    print(f"devices: {jax.devices()}; data {n} x {args.dim}, {args.classes} classes, "
          f"{args.train_rows} training rows, batch {c.batch_size}, {args.epochs} epoch(s)")
    print(f"float32 matmul peak (jnp.dot 2048^3), before: {peak:.1f} GFLOP/s")

    go, steps = jax_runner(c, data)
    hp1 = train.member_hparams(one)
    hp25 = train.member_hparams(members)
    go(hp1), go(hp25)  # compile both shapes
    rows = []
    t1 = min(_timed(lambda: go(hp1)) for _ in range(2))
    rows.append(("jax, 1 member", 1, t1, 1.0))
    t25 = _timed(lambda: go(hp25))
    rows.append(("jax, 25 vmapped", 25, t25, 1.0))
    # The same compiled 1-member program, once per member (method and trial are traced).
    seq = [_timed(lambda: go(train.member_hparams([m]))) for m in members[: args.sequential]]
    rows.append((f"jax, 25 sequential ({args.sequential} run, scaled)", 25,
                 float(np.sum(seq)) * 25 / len(seq), 1.0))
    torch_epochs(np.asarray(ds.embeddings), np.asarray(ds.labels),  # warm-up
                 np.asarray(s.train_idx[0]), np.asarray(s.seen_mask[0]), c, 1)
    t_torch = torch_epochs(np.asarray(ds.embeddings), np.asarray(ds.labels),
                           np.asarray(s.train_idx[0]), np.asarray(s.seen_mask[0]), c, args.epochs)
    # Torch computes only the B/2 mixed rows of a halved batch.
    rows.append(("torch eager, 1 member (E-Mixup)", 1, t_torch, None))

    # The evaluation at the end of each run is timed too, so it is counted too.
    flops = step_flops(c.batch_size, dims) * steps * args.epochs + eval_flops(n, dims)
    peak = max(peak, matmul_peak())  # the box is shared: take the better of two readings
    print(f"float32 matmul peak, best of before/after: {peak:.1f} GFLOP/s\n")
    print(f"| run | time (s) | examples/s | vs jax 1 member | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|")
    base = c.batch_size * steps * args.epochs / t1
    torch_flops = step_flops(c.batch_size // 2, dims) * steps * args.epochs  # no evaluation
    for name, m, t, share in rows:
        ex = m * c.batch_size * steps * args.epochs / t
        gf = (m * flops if share else torch_flops) / t / 1e9
        print(f"| {name} | {t:.2f} | {ex:,.0f} | {ex / base:.2f}x | {gf:.1f} | "
              f"{100 * gf / peak:.0f}% |")
    print("\nJAX runs every member on the full fixed-size batch (mixing pads its B/2 mixed rows "
          "with B/2 weight-0 rows, so control and mixing share one program); torch runs B/2.")


if __name__ == "__main__":
    main()
