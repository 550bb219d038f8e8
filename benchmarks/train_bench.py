"""Training speed of the sweep engine at the paper's shapes: issue 10's figures 1-4, one run.

  python benchmarks/train_bench.py                              # the paper's shapes
  python benchmarks/train_bench.py --dim=512 --rounds=2         # a quicker look

The paper's MLP and batch (D -> 250 -> 250 -> C, batch 128, 4,400 training rows, AdamW on the
cyclic lr), Gaussian-cluster data. Every case is timed in each of `--rounds` interleaved rounds
(so every case sees the same machine load) after a warm-up call that compiles it; the figures
use the medians. Training only (`--epochs` epochs per sweep call, `--member-epochs` per
single-member call, no evaluation; the evaluation is timed by experiments/paper_scale_timing.py).

  1. one E-Mixup member (64 mixed rows a step) against a plain PyTorch eager loop of the same
     model and augmentation: examples/s ratio (bound >= 1.5x)
  2. the 25-member Table-1 sweep (5 methods x 5 trials, grouped by kind: three programs)
     against the same 25 members each trained alone: cost per member-epoch (bound <= 1.05x)
  3. augmentation's share of an E-Mixup member's time: the member against the same member with
     the augmentation (Beta draws, pairing, mixing) replaced by a plain slice of 64 rows
     (bound <= 5%)
  4. useful FLOP rate of the sweep (every FLOP is useful: no padding rows) against the jnp.dot
     2048^3 float32 peak measured before and after in the same run (bound >= 50%)
FLOPs count the matmuls of a step: forward, and backward without the first layer's input
gradient (which nothing needs). Every case runs the engine's own programs
(`driver.compiled_group`) on one XLA CPU device per core, as `embaug train` makes them
(`--cpu-devices`; a lone member is padded to the device count, the padding skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax import augment, configlib, registry, util
from embaug_jax.train import driver, program
from embaug_jax.train.members import member_groups, member_hparams, with_config_settings
from embaug_jax.train.splits import make_splits
from embaug_jax.train.synthetic import make_synthetic

REPO = Path(__file__).resolve().parent.parent


def matmul_peak(n=2048, repeats=10) -> float:
    """float32 GFLOP/s of jnp.dot on n x n matrices (best of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready())[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    """(wall seconds, process CPU seconds) of fn()."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def step_flops(rows, dims) -> float:
    """Matmul FLOPs of one training step: forward, and backward without the input gradient."""
    layers = [2 * rows * a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2 * layers[0] + 3 * sum(layers[1:])


@contextlib.contextmanager
def plain_slice():
    """Replaces the augmentation by the first B/2 rows of the batch with one-hot labels."""
    rows, weights = augment.augment_rows, augment.draw_weights

    def sliced(key, take, batch, params, *, kind, **kwargs):
        return take(slice(0, augment.kind_rows(kind, batch)))

    augment.augment_rows = sliced
    augment.draw_weights = lambda key, params, batch, **kw: jnp.zeros(())
    try:
        yield
    finally:
        augment.augment_rows, augment.draw_weights = rows, weights


_PROGRAMS = {}


def trainer(config, kind, num_classes, n_train, on_device, hp, epochs, *, sliced=False,
            fixed=()):
    """A `go()` that trains the members `hp` (all of `kind`) for `epochs` epochs as the engine's
    driver does: `driver.compiled_group` on every device, members padded to the device count
    (the padding skipped), `driver.members_at_once` of them stepped together on a device;
    `fixed` is their group's shared settings (`Group.fixed`: the program's constants)."""
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("members",))
    at_once = driver.members_at_once(config, jax.devices())
    with plain_slice() if sliced else contextlib.nullcontext():
        spec = program.ProgramSpec.from_config(config, num_classes, n_train, kind=kind,
                                               fixed=fixed)
        if (spec, sliced) not in _PROGRAMS:  # uncached: a sliced program shares its spec
            _PROGRAMS[spec, sliced] = driver.compiled_group.__wrapped__(spec, mesh, at_once)
        init, train, _ = _PROGRAMS[spec, sliced]
        hp, live = driver.place_members(hp, mesh)
        key = jax.random.key(0)
        state = [init(key, hp, on_device)]
        state[0], loss = train(key, hp, live, state[0], on_device, epochs)  # compiles
        loss.block_until_ready()

    def go():
        state[0], loss = train(key, hp, live, state[0], on_device, epochs)
        loss.block_until_ready()

    return go, spec.steps_per_epoch


def clusters(n, dim, classes, train_rows, *, trials):
    """Gaussian clusters (n x dim, `classes` balanced classes) split into `trials` splits of
    `train_rows` training rows: (dataset, splits, the training rows placed on every device)."""
    ds = make_synthetic(0, n, dim, classes, imbalance=1.0)
    s = make_splits(ds.labels, classes, trials=trials, train_fraction=train_rows / n)
    data = program.TrainData(ds.embeddings, ds.labels, s.train_idx, s.val_idx, s.seen_mask)
    on_device = jax.device_put(driver.device_data(data), jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.asarray(jax.devices()), ("members",)), jax.sharding.PartitionSpec()))
    return ds, s, on_device


def torch_epochs(x, labels, train_rows, seen, config, epochs):
    """Plain PyTorch eager E-Mixup training of the same MLP (halving: 64 mixed rows a step)."""
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
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, config.optim.lr_min, config.optim.lr_max,
        step_size_up=config.optim.half_cycle_epochs * steps, cycle_momentum=False)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    mask = torch.from_numpy(seen)
    beta = torch.distributions.Beta(0.2, 0.2)

    def go():
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
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(xm)[:, mask], ym[:, mask])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()

    return go


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=4864)
    p.add_argument("--classes", type=int, default=171)
    p.add_argument("--train-rows", type=int, default=4400)
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed call of a sweep")
    p.add_argument("--member-epochs", type=int, default=8,
                   help="epochs per timed call of the single-member cases (figures 1 and 3): "
                        "one epoch is ~0.15 s, too short to time on a shared machine")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="XLA CPU devices (0: one per core, as `embaug train` does)")
    p.add_argument("--members-at-once", type=int, default=None,
                   help="config.members_at_once (default: auto)")
    args = p.parse_args(argv)
    util.split_cpu_into_devices(args.cpu_devices)

    c = configlib.get_config(REPO / "configs" / "default.py")
    c.members_at_once = args.members_at_once
    n = args.train_rows + args.train_rows // 10
    ds, s, on_device = clusters(n, args.dim, args.classes, args.train_rows, trials=5)
    n_train = s.train_idx.shape[1]
    # The paper's five at their default settings (alpha 0.2, softness 0.05), 5 trials each.
    members = [dict(method=m.name, **{n: registry.setting(n).default[0] for n in m.reads},
                    trial=t, seed=0) for m in registry.methods(tag="paper") for t in range(5)]
    hp25 = member_hparams(with_config_settings(c, members))
    groups = member_groups(members)
    dims = (args.dim, *c.model.hidden, args.classes)
    E = args.epochs

    print(f"jax {jax.__version__} on {jax.devices()}; data {n} x {args.dim}, {args.classes} "
          f"classes, {args.train_rows} training rows, batch {c.batch_size}, {E} epoch(s) per "
          f"sweep call, {args.member_epochs} per single-member call, {args.rounds} interleaved "
          "rounds")
    peak0 = matmul_peak()
    print(f"float32 matmul peak (jnp.dot 2048^3) before: {peak0:.1f} GFLOP/s", flush=True)

    def hp_of(idx):
        return jax.tree.map(lambda x: x[np.asarray(idx)], hp25)

    cases = {}
    mixup_member = members.index(dict(method="e_mixup", alpha=0.2, trial=0, seed=0))
    ME = args.member_epochs
    cases["e_mixup member"], steps = trainer(c, "mixup", args.classes, n_train, on_device,
                                             hp_of([mixup_member]), ME)
    cases["same member, plain slice"], _ = trainer(c, "mixup", args.classes, n_train, on_device,
                                                   hp_of([mixup_member]), ME, sliced=True)
    cases["torch eager e_mixup member"] = torch_epochs(
        ds.embeddings, ds.labels, s.train_idx[0], s.seen_mask[0], c, ME)
    cases["torch eager e_mixup member"]()  # warm-up
    sweep = [trainer(c, g.kind, args.classes, n_train, on_device, hp_of(g.members), E)[0]
             for g in groups]
    cases["25-member sweep (3 programs)"] = lambda: [go() for go in sweep]
    alone = [trainer(c, registry.method(m["method"]).kind, args.classes, n_train, on_device,
                     hp_of([i]), E)[0] for i, m in enumerate(members)]
    cases["25 members alone, one after another"] = lambda: [go() for go in alone]
    print("compiled; timing", flush=True)

    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    for r in range(args.rounds):
        for k, go in cases.items():
            w, u = _timed(go)
            wall[k].append(w)
            cpu[k].append(u)
        print(f"round {r + 1}: " + ", ".join(f"{k} {wall[k][-1]:.2f}s" for k in cases), flush=True)
    peak = max(peak0, matmul_peak())
    print(f"float32 matmul peak, best of before/after: {peak:.1f} GFLOP/s\n")

    med = {k: float(np.median(v)) for k, v in wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    print("| case | wall median (s) | CPU median (s) | examples/s |")
    print("|---|---|---|---|")
    for k in cases:
        m, e = (25, E) if k.startswith("25") else (1, ME)
        print(f"| {k} | {med[k]:.3f} | {med_cpu[k]:.3f} | "
              f"{m * c.batch_size * steps * e / med[k]:,.0f} |")

    rows = [augment.kind_rows(registry.method(m["method"]).kind, c.batch_size) for m in members]
    useful = sum(step_flops(r, dims) for r in rows) * steps * E
    f1 = med["torch eager e_mixup member"] / med["e_mixup member"]
    f2 = med["25-member sweep (3 programs)"] / med["25 members alone, one after another"]
    f3 = 1 - med["same member, plain slice"] / med["e_mixup member"]
    f3_cpu = 1 - med_cpu["same member, plain slice"] / med_cpu["e_mixup member"]
    rate = useful / med["25-member sweep (3 programs)"] / 1e9
    print("\n| # | figure | measured | bound |")
    print("|---|---|---|---|")
    print(f"| 1 | E-Mixup member examples/s vs PyTorch eager | {f1:.2f}x | >= 1.5x |")
    print(f"| 2 | sweep cost per member-epoch vs members alone | {f2:.3f}x | <= 1.05x |")
    print(f"| 3 | augmentation's share of the E-Mixup member's time | {100 * f3:.1f}% "
          f"(CPU time: {100 * f3_cpu:.1f}%) | <= 5% |")
    print(f"| 4 | sweep useful FLOP rate vs jnp.dot peak | {rate:.1f} / {peak:.1f} GFLOP/s = "
          f"{100 * rate / peak:.0f}% | >= 50% |")


if __name__ == "__main__":
    main()
