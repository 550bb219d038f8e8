"""Training speed of the sweep engine at the paper's shapes: figures 1-9, one run.

  python benchmarks/train_bench.py                              # the paper's shapes
  python benchmarks/train_bench.py --dim=512 --rounds=2         # a quicker look
  python benchmarks/train_bench.py --cpu-devices=4              # figure 6 needs 4 devices
  python benchmarks/train_bench.py --at-once=auto,0,1           # figure 7: vmap / one at a time
  python benchmarks/train_bench.py --skip=1,2,3,4               # figures 5, 8 and 9 alone

The paper's MLP and batch (D -> 250 -> 250 -> C, batch 128, 4,400 training rows, AdamW on the
cyclic lr), Gaussian-cluster data. Every case is timed in each of `--rounds` interleaved rounds
(so every case sees the same machine load) after a warm-up call that compiles it; the figures
use the medians. Training only (`--epochs` epochs per sweep call, `--member-epochs` per
single-member call, no evaluation; the evaluation is timed by experiments/paper_scale_timing.py).

  1. one E-Mixup member (64 mixed rows a step) against a plain PyTorch eager loop of the same
     model and augmentation: examples/s ratio (bound >= 1.5x)
  2. the 25-member Table-1 sweep (5 methods x 5 trials, grouped by kind: three programs;
     `--trials`) against the same 25 members each trained alone: cost per member-epoch
     (bound <= 1.05x)
  3. augmentation's share of an E-Mixup member's time: the member against the same member with
     the augmentation (Beta draws, pairing, mixing) replaced by a plain slice of 64 rows
     (bound <= 5%)
  4. useful FLOP rate of the sweep (every FLOP is useful: no padding rows) against the jnp.dot
     2048^3 float32 peak measured before and after in the same run (bound >= 50%)
  5. one E-Mixup member on 2 devices (split over both by its features) against the same member
     on 1: examples/s ratio (bound >= 1.4x; needs 2 devices)
  6. a 2-member sweep (E-Mixup and Soft E-Mixup: one program) on 4 devices (a 2 x 2 members x
     features mesh) against the same on 2 (one member each): examples/s ratio (bound >= 1.4x;
     needs 4 devices)
  7. (`--at-once`) the 25-member sweep with each other `config.members_at_once` against the
     automatic choice: time ratio (no bound: which layout wins on this device)
  8. the all-reduce over 2 devices that a split member pays each step: of the first layer's
     [64, 250] outputs (the features split the engine makes) against that of the 1.3M-float
     gradient (what splitting the batch instead would sum), in ms (no bound)
  9. two E-Mixup members on 2 devices, one whole member each, against one member on 1:
     examples/s ratio (no bound: what the two devices give work that needs no communication,
     the yardstick for figure 5)
FLOPs count the matmuls of a step: forward, and backward without the first layer's input
gradient (which nothing needs). Every case runs the engine's own programs
(`driver.compiled_group`) on the devices and mesh `embaug train` would use: figures 1-4 on all
the process's devices (on a CPU one XLA device per core, `--cpu-devices`), each group on the
members x features mesh of `driver.devices_per_member` (on CPU devices every member whole;
members padded to the members axis skip the padding); figures 5 and 6 on the first 1, 2 or 4
of them, each member split over the devices its group leaves idle, as the automatic rule does
on an accelerator. More CPU devices than cores share the cores: figure 6 then measures the
sharing, not the layout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def allreduce_ms(devices, size: int, steps: int = 34, repeats: int = 5) -> float:
    """ms per all-reduce (a `lax.psum` inside a `lax.scan` of `steps`, as in an epoch) of
    `size` float32s over `devices` (best of `repeats`)."""
    mesh = jax.sharding.Mesh(np.asarray(devices), ("d",))

    def epoch(x):
        def step(c, _):
            return c + 1e-6 * jax.lax.psum(c, "d"), None
        return jax.lax.scan(step, x, None, length=steps)[0]

    f = jax.jit(jax.shard_map(epoch, mesh=mesh, in_specs=jax.sharding.PartitionSpec(),
                              out_specs=jax.sharding.PartitionSpec(), check_vma=False))
    x = jax.device_put(jnp.ones((size,)), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    f(x).block_until_ready()
    return 1e3 * min(_timed(lambda: f(x).block_until_ready())[0]
                     for _ in range(repeats)) / steps


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


def placed_on(on_all, devices):
    """`on_all` (replicated over every device) as arrays over `devices` alone, sharing their
    buffers: no further copy of the training rows."""
    sharding = jax.sharding.NamedSharding(driver.group_mesh(devices, 1),
                                          jax.sharding.PartitionSpec())
    return jax.tree.map(lambda a: jax.make_array_from_single_device_arrays(
        a.shape, sharding, [s.data for s in a.addressable_shards if s.device in devices]), on_all)


def trainer(config, kind, num_classes, n_train, on_all, hp, epochs, *, devices=None,
            sliced=False, fixed=()):
    """A `go()` that trains the members `hp` (all of `kind`) for `epochs` epochs on `devices`
    (default all) as the engine's driver does: `driver.compiled_group` on the group's members x
    features mesh (`driver.devices_per_member`), members padded to the members axis (the
    padding skipped), `driver.members_at_once` of them stepped together on a device; `fixed` is
    their group's shared settings (`Group.fixed`: the program's constants)."""
    devices = jax.devices() if devices is None else list(devices)
    per_member = driver.devices_per_member(config, len(hp.trial), len(devices),
                                           on_all.x.shape[1], platform=devices[0].platform)
    mesh = driver.group_mesh(devices, per_member)
    at_once = driver.members_at_once(config, devices)
    on_device = placed_on(on_all, devices)
    with plain_slice() if sliced else contextlib.nullcontext():
        spec = program.ProgramSpec.from_config(config, num_classes, n_train, kind=kind,
                                               fixed=fixed)
        if (spec, sliced, mesh, at_once) not in _PROGRAMS:  # uncached: a sliced program
            _PROGRAMS[spec, sliced, mesh, at_once] = driver.compiled_group.__wrapped__(
                spec, mesh, at_once)  # shares its spec
        init, train, _ = _PROGRAMS[spec, sliced, mesh, at_once]
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
        driver.group_mesh(jax.devices(), 1), jax.sharding.PartitionSpec()))
    return ds, s, on_device


def torch_epochs(x, labels, train_rows, seen, config, epochs, device="cpu"):
    """Plain PyTorch eager E-Mixup training of the same MLP (halving: 64 mixed rows a step) on
    `device`."""
    import torch

    torch.manual_seed(0)
    d, c = x.shape[1], seen.shape[0]
    h1, h2 = config.model.hidden
    model = torch.nn.Sequential(
        torch.nn.Linear(d, h1), torch.nn.Dropout(0.3), torch.nn.ReLU(),
        torch.nn.Linear(h1, h2), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(h2, c)
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr_min,
                            weight_decay=config.optim.weight_decay)
    steps = len(train_rows) // config.batch_size
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, config.optim.lr_min, config.optim.lr_max,
        step_size_up=config.optim.half_cycle_epochs * steps, cycle_momentum=False)
    xt, yt = (torch.from_numpy(a).to(device) for a in (x, labels.astype(np.int64)))
    mask, rows = torch.from_numpy(seen).to(device), torch.from_numpy(train_rows).to(device)
    beta = torch.distributions.Beta(torch.tensor(0.2, device=device),
                                    torch.tensor(0.2, device=device))

    def go():
        for _ in range(epochs):
            perm = rows[torch.randperm(len(train_rows), device=device)]
            for i in range(steps):
                idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
                xb = xt[idx]
                yb = torch.nn.functional.one_hot(yt[idx], c).float()
                shuffle = torch.randperm(len(idx), device=device)
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
        if device != "cpu":
            torch.cuda.synchronize()

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
    p.add_argument("--trials", type=int, default=5, help="trials of the sweep's five methods")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="XLA CPU devices (0: one per core, as `embaug train` does)")
    p.add_argument("--members-at-once", type=int, default=None,
                   help="config.members_at_once (default: auto)")
    p.add_argument("--at-once", default="auto",
                   help="figure 7: comma-separated config.members_at_once values the 25-member "
                        "sweep is also timed with (0: vmap, k: k at a time), against 'auto'")
    p.add_argument("--skip", default="",
                   help="comma-separated figures not to measure (1: PyTorch, 2: the members "
                        "alone, 3: the plain slice, 4: the sweep, where 2 and 7 do not need it), "
                        "e.g. --skip=1,2,3,4 for figures 5, 8 and 9 alone")
    p.add_argument("--torch-device", default="cpu",
                   help="where the PyTorch eager member of figure 1 runs (cpu, cuda)")
    args = p.parse_args(argv)
    skip = {int(f) for f in args.skip.split(",") if f.strip()}
    util.split_cpu_into_devices(args.cpu_devices)

    c = configlib.get_config(REPO / "configs" / "default.py")
    c.members_at_once = args.members_at_once
    n = args.train_rows + args.train_rows // 10
    ds, s, on_all = clusters(n, args.dim, args.classes, args.train_rows, trials=args.trials)
    devices = jax.devices()
    n_train = s.train_idx.shape[1]
    # The paper's five at their default settings (alpha 0.2, softness 0.05), 5 trials each.
    members = [dict(method=m.name, **{n: registry.setting(n).default[0] for n in m.reads},
                    trial=t, seed=0) for m in registry.methods(tag="paper")
               for t in range(args.trials)]
    members = with_config_settings(c, members)
    hp_all = member_hparams(members)
    groups = member_groups(members)
    sweep_name = f"{len(members)}-member sweep ({len(groups)} programs)"
    dims = (args.dim, *c.model.hidden, args.classes)
    E = args.epochs

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}")
    print(f"jax {jax.__version__} on {jax.devices()}; data {n} x {args.dim}, {args.classes} "
          f"classes, {args.train_rows} training rows, batch {c.batch_size}, {E} epoch(s) per "
          f"sweep call, {args.member_epochs} per single-member call, {args.rounds} interleaved "
          "rounds")
    peak0 = matmul_peak()
    print(f"float32 matmul peak (jnp.dot 2048^3) before: {peak0:.1f} GFLOP/s", flush=True)

    def hp_of(idx):
        return jax.tree.map(lambda x: x[np.asarray(idx)], hp_all)

    def fixed_of(idx):  # the shared settings of these members' group, as run_sweep fixes them
        return member_groups([members[i] for i in idx])[0].fixed

    def find(**fields):
        return next(i for i, m in enumerate(members)
                    if all(m.get(k) == v for k, v in fields.items()))

    cases, members_in = {}, {}  # members_in: members a case trains (examples/s)
    mixup_member = find(method="e_mixup", alpha=0.2, trial=0, seed=0)
    pair = [mixup_member, find(method="soft_e_mixup", alpha=0.2, softness=0.05, trial=0, seed=0)]
    ME = args.member_epochs

    def member_case(name, idx, *, on=devices, sliced=False, config=c):
        cases[name], steps = trainer(config, "mixup", args.classes, n_train, on_all, hp_of(idx),
                                     ME, devices=on, sliced=sliced, fixed=fixed_of(idx))
        members_in[name] = len(idx)
        return steps

    steps = member_case("e_mixup member", [mixup_member])
    if 3 not in skip:
        member_case("same member, plain slice", [mixup_member], sliced=True)
    if 1 not in skip:
        cases["torch eager e_mixup member"] = torch_epochs(
            ds.embeddings, ds.labels, s.train_idx[0], s.seen_mask[0], c, ME, args.torch_device)
        cases["torch eager e_mixup member"]()  # warm-up
        members_in["torch eager e_mixup member"] = 1
    # Figures 5 and 6: the same E-Mixup members on the first 1, 2 or 4 devices, each member
    # split over the devices the members leave idle (the accelerator rule; on CPU devices the
    # automatic rule keeps members whole, so the split is set here).
    scaling = {}  # figure: (the case on more devices, the case on fewer)
    for fig, idx, (few, many) in ((5, [mixup_member], (1, 2)), (6, pair, (2, 4))):
        if len(devices) < many:
            continue
        names = []
        for n_dev in (many, few):
            name = f"{len(idx)} mixup-kind member(s), {n_dev} device(s)"
            if name not in cases:
                split = c.copy_and_resolve_references()
                split.devices_per_member = max(1, n_dev // len(idx))
                member_case(name, idx, on=devices[:n_dev], config=split)
            names.append(name)
        scaling[fig] = tuple(names)
    if 5 in scaling:  # figure 9: two whole members on figure 5's two devices, one each
        whole = c.copy_and_resolve_references()
        whole.devices_per_member = 1
        if "2 mixup-kind member(s), 2 device(s)" not in cases:
            member_case("2 mixup-kind member(s), 2 device(s)", pair, on=devices[:2],
                        config=whole)

    def sweep_case(name, config):
        sweep = [trainer(config, g.kind, args.classes, n_train, on_all, hp_of(g.members), E,
                         devices=devices, fixed=g.fixed)[0] for g in groups]
        cases[name] = lambda: [go() for go in sweep]
        members_in[name] = len(members)

    if not ({2, 4} <= skip and args.at_once.strip() in ("", "auto")):  # figures 2, 4 and 7
        sweep_case(sweep_name, c)
    alone_name = f"{len(members)} members alone, one after another"
    if 2 not in skip:
        alone = [trainer(c, registry.method(m["method"]).kind, args.classes, n_train, on_all,
                         hp_of([i]), E, devices=devices, fixed=fixed_of([i]))[0]
                 for i, m in enumerate(members)]
        cases[alone_name] = lambda: [go() for go in alone]
        members_in[alone_name] = len(members)
    auto = driver.members_at_once(c, devices)
    at_once = {}
    for value in args.at_once.split(","):
        if value.strip() in ("", "auto") or int(value) == auto:
            continue
        variant = c.copy_and_resolve_references()
        variant.members_at_once = int(value)
        at_once[int(value)] = f"{len(members)}-member sweep, members_at_once={int(value)}"
        sweep_case(at_once[int(value)], variant)
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
    print(f"float32 matmul peak, best of before/after: {peak:.1f} GFLOP/s; "
          f"{time.strftime('%H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.1f}\n")

    med = {k: float(np.median(v)) for k, v in wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    print("| case | wall median (s) | CPU median (s) | examples/s |")
    print("|---|---|---|---|")
    for k in cases:
        e = E if members_in[k] == len(members) else ME
        print(f"| {k} | {med[k]:.3f} | {med_cpu[k]:.3f} | "
              f"{members_in[k] * c.batch_size * steps * e / med[k]:,.0f} |")

    rows = [augment.kind_rows(registry.method(m["method"]).kind, c.batch_size) for m in members]
    useful = sum(step_flops(r, dims) for r in rows) * steps * E
    print("\n| # | figure | measured | bound |")
    print("|---|---|---|---|")
    if 1 not in skip:
        f1 = med["torch eager e_mixup member"] / med["e_mixup member"]
        print(f"| 1 | E-Mixup member examples/s vs PyTorch eager ({args.torch_device}) | "
              f"{f1:.2f}x | >= 1.5x |")
    if 2 not in skip:
        f2 = med[sweep_name] / med[alone_name]
        print(f"| 2 | sweep cost per member-epoch vs members alone | {f2:.3f}x | <= 1.05x |")
    if 3 not in skip:
        f3 = 1 - med["same member, plain slice"] / med["e_mixup member"]
        f3_cpu = 1 - med_cpu["same member, plain slice"] / med_cpu["e_mixup member"]
        print(f"| 3 | augmentation's share of the E-Mixup member's time | {100 * f3:.1f}% "
              f"(CPU time: {100 * f3_cpu:.1f}%) | <= 5% |")
    if 4 not in skip:
        rate = useful / med[sweep_name] / 1e9
        print(f"| 4 | sweep useful FLOP rate vs jnp.dot peak | {rate:.1f} / {peak:.1f} GFLOP/s "
              f"= {100 * rate / peak:.0f}% | >= 50% |")
    cores = os.cpu_count() or 1
    for fig, need, what in ((5, 2, "one E-Mixup member examples/s, 2 devices vs 1"),
                            (6, 4, "2-member sweep examples/s, 4 devices vs 2")):
        if fig not in scaling:
            print(f"| {fig} | {what} | not measurable: {len(devices)} device(s), needs {need} "
                  "| >= 1.4x |")
            continue
        faster, slower = scaling[fig]
        shared = (f" ({need} CPU devices share {cores} cores: not measurable here)"
                  if devices[0].platform == "cpu" and need > cores else "")
        print(f"| {fig} | {what} | {med[slower] / med[faster]:.2f}x{shared} | >= 1.4x |")
    for value, name in at_once.items():
        print(f"| 7 | {len(members)}-member sweep time, members_at_once={value} vs auto "
              f"({auto}) | {med[name] / med[sweep_name]:.2f}x | |")
    if len(devices) >= 2:
        params = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
        outputs, gradient = (allreduce_ms(devices[:2], n) for n in (64 * dims[1], params))
        print(f"| 8 | all-reduce over 2 devices a step: the first layer's [64, {dims[1]}] "
              f"outputs vs the {params / 1e6:.2f}M-float gradient | {outputs:.3f} vs "
              f"{gradient:.3f} ms | |")
    if 5 in scaling:
        one = scaling[5][1]
        print(f"| 9 | two whole E-Mixup members on 2 devices vs one on 1: examples/s (work "
              f"needing no communication, figure 5's yardstick) | "
              f"{2 * med[one] / med['2 mixup-kind member(s), 2 device(s)']:.2f}x | |")


if __name__ == "__main__":
    main()
