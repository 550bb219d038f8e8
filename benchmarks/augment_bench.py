"""Times each augmentation per batch next to plain NumPy and a memory copy of the same bytes.

    python benchmarks/augment_bench.py                      # B=256, D=4864 (the paper's input)
    python benchmarks/augment_bench.py --repeats 200 --pairing permute

Every figure comes from this one run, so the ratios are like for like. Columns:
  jax        the named function under jax.jit (e.g. `e_mixup`)
  traced     `augment_batch` with that method's `MethodParams`: one compiled program for all five
  numpy      the same mathematics in plain NumPy (numpy.random.Generator)
GB/s is the effective bandwidth: bytes the method must read (x, y) and write (its outputs),
divided by the median time. The copy rows move the bytes of x once (read + write) with
`np.copyto` and a jitted `jnp.copy`: the memory-bandwidth limit of this machine. "mask" rows
compare ways of drawing stitchup's element mask (the choice is explained in embaug_jax/augment/methods.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax import augment as A
from embaug_jax.augment.methods import stitch_mask


def time_interleaved(cases: dict, repeats: int, warmup: int = 3) -> dict:
    """Median and minimum wall time of every `fn()` in `cases` (each must block on its result).

    Rounds visit every case once, so a load that comes and goes (other processes on a shared
    machine) hits all cases alike and the ratios stay fair.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------
# The NumPy reference: the same mathematics, written the obvious way.
# ---------------------------------------------------------------------------------------------


def np_soften(y, softness=0.05, negative_mass=1.0):
    positive = y > 0
    out = np.where(positive, np.maximum(y - softness, 0), y)
    n_zero = np.maximum((~positive).sum(-1, keepdims=True), 1)
    return np.where(positive, out, out + negative_mass / n_zero).astype(y.dtype)


def np_method(name, rng, x, y, alpha, pairing):
    if name == "control":
        return x, y
    batch = x.shape[0]
    if pairing == "halve":
        perm = rng.permutation(batch)
        a, b = perm[: batch // 2], perm[batch // 2:]
    elif pairing == "permute":
        a = np.arange(batch)
        b = (a + rng.integers(1, batch, batch)) % batch
    else:
        a, b = np.arange(batch), np.arange(batch)[::-1]
    lam = rng.beta(alpha, alpha, (len(a), 1)).astype(np.float32)
    if "mixup" in name:
        x_mix = lam * x[a] + (1 - lam) * x[b]
    else:
        x_mix = np.where(rng.random((len(a), x.shape[1]), dtype=np.float32) < lam, x[a], x[b])
    y_mix = lam * y[a] + (1 - lam) * y[b]
    if name.startswith("soft_"):
        y_mix = np_soften(y_mix)
    return x_mix, y_mix


# ---------------------------------------------------------------------------------------------
# Ways to draw stitchup's mask (kept so the choice in augment/methods.py stays measurable).
# ---------------------------------------------------------------------------------------------


def mask_uniform_float(key, lam, dim):
    return jax.random.uniform(key, (lam.shape[0], dim)) < lam


def mask_bits24(key, lam, dim):
    threshold = jnp.round(lam * 2.0**24).astype(jnp.uint32)
    return (jax.random.bits(key, (lam.shape[0], dim), jnp.uint32) >> 8) < threshold


def mask_bits16_halves(key, lam, dim):  # what augment/methods.py does
    return stitch_mask(key, lam, dim, None)


def mask_bits8_quarters(key, lam, dim):  # faster, but each row's rate is lam +- 1/256
    k_bits, k_round = jax.random.split(key)
    threshold = jnp.floor(lam * 256 + jax.random.uniform(k_round, lam.shape)).astype(jnp.uint32)
    words = jax.random.bits(k_bits, (lam.shape[0], -(-dim // 4)), jnp.uint32)
    quarters = [(words >> s) & 0xFF for s in (0, 8, 16, 24)]
    return jnp.concatenate(quarters, axis=1)[:, :dim] < threshold


def mask_philox4x32_bits16(key, lam, dim):  # a different generator seeded from the key
    philox = jax.random.wrap_key_data(jax.random.bits(key, (2,), jnp.uint32), impl="philox4x32")
    return stitch_mask(philox, lam, dim, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=4864)
    parser.add_argument("--classes", type=int, default=171, help="the paper's dataset has 171")
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--pairing", default="halve", choices=A.PAIRINGS)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    bsz, dim, classes = args.batch, args.dim, args.classes

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((bsz, dim), dtype=np.float32)
    y_np = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, bsz)]
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    key = jax.random.key(0)
    pairs = A.num_outputs(bsz, args.pairing)
    in_bytes = x_np.nbytes + y_np.nbytes
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpus); "
          f"B={bsz} D={dim} C={classes} float32, alpha={args.alpha}, pairing={args.pairing}, "
          f"median of {args.repeats}")

    cases, moved_bytes = {}, {}

    def add(name, column, fn, moved):
        cases[(name, column)] = fn
        moved_bytes[(name, column)] = moved

    traced = jax.jit(lambda k, x, y, p: A.augment_batch(k, x, y, p, pairing=args.pairing))
    # augment_batch always writes B rows (padding under "halve") and the weights.
    traced_bytes = in_bytes + bsz * (dim + classes + 1) * 4
    for name in A.METHOD_NAMES:
        out_rows = bsz if name == "control" else pairs
        moved = in_bytes + out_rows * (dim + classes) * 4
        named = jax.jit(lambda k, x, y, name=name: A.METHODS[name](k, x, y, args.alpha, pairing=args.pairing))
        params = A.method_params(name, alpha=args.alpha)
        np_rng = np.random.default_rng(1)
        add(name, "jax", lambda named=named: jax.block_until_ready(named(key, x, y)), moved)
        add(name, "traced", lambda p=params: jax.block_until_ready(traced(key, x, y, p)), traced_bytes)
        # NumPy's control returns its inputs: nothing moves.
        add(name, "numpy", lambda name=name, r=np_rng: np_method(name, r, x_np, y_np, args.alpha, args.pairing),
            0 if name == "control" else moved)

    # All five methods as one vmapped program, the sweep engine's case: time for all five.
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[A.method_params(n, args.alpha) for n in A.METHOD_NAMES])
    keys = jax.random.split(key, len(A.METHOD_NAMES))
    sweep = jax.jit(jax.vmap(lambda k, p: A.augment_batch(k, x, y, p, pairing=args.pairing)))
    add("all 5 methods, vmapped", "traced", lambda: jax.block_until_ready(sweep(keys, stacked)),
        len(A.METHOD_NAMES) * traced_bytes)

    # Five E-Mixup members vmapped, each with its own batch (as in a sweep): what vmap adds to
    # a member's cost. Time for all five; the ratio per member is printed at the end.
    xs = jnp.stack([jnp.roll(x, i, 0) for i in range(5)])
    ys = jnp.stack([jnp.roll(y, i, 0) for i in range(5)])
    same = jax.tree.map(lambda *v: jnp.stack(v), *[A.method_params("e_mixup", args.alpha)] * 5)
    members = jax.jit(jax.vmap(lambda k, x, y, p: A.augment_batch(k, x, y, p, pairing=args.pairing)))
    add("5 e_mixup members, vmapped", "traced",
        lambda: jax.block_until_ready(members(keys, xs, ys, same)), 5 * traced_bytes)

    dst = np.empty_like(x_np)
    add("memory copy of x", "numpy", lambda: np.copyto(dst, x_np), 2 * x_np.nbytes)
    jcopy = jax.jit(jnp.copy)
    add("memory copy of x", "jax", lambda: jcopy(x).block_until_ready(), 2 * x_np.nbytes)

    lam = jax.random.uniform(jax.random.key(1), (pairs, 1))
    x_a, x_b = x[:pairs], x[-pairs:]
    for variant in (mask_uniform_float, mask_bits24, mask_bits16_halves, mask_bits8_quarters,
                    mask_philox4x32_bits16):
        kernel = jax.jit(lambda k, lam, a, b, variant=variant: jnp.where(variant(k, lam, dim), a, b))
        add(f"mask+where {variant.__name__.removeprefix('mask_')}", "jax",
            lambda kernel=kernel: kernel(key, lam, x_a, x_b).block_until_ready(), 3 * pairs * dim * 4)

    timings = time_interleaved(cases, args.repeats)
    copy_key = ("memory copy of x", "numpy")
    limit = moved_bytes[copy_key] / timings[copy_key][0] / 1e9
    print(f"\n{'case':30s} {'column':7s} {'median ms':>9s} {'min ms':>7s} {'GB/s':>7s} {'of copy':>7s}")
    for (name, column), (median, fastest) in timings.items():
        moved = moved_bytes[(name, column)]
        gbs = moved / median / 1e9
        share = f"{gbs / limit:7.0%}" if moved else f"{'-':>7s}"
        shown = f"{gbs:7.2f}" if moved else f"{'-':>7s}"
        print(f"{name:30s} {column:7s} {median * 1e3:9.3f} {fastest * 1e3:7.3f} {shown} {share}")
    print("\nGB/s: bytes read + written / median time; 'of copy': share of np.copyto's GB/s.")
    ratio = lambda n, a, b: timings[(n, a)][0] / timings[(n, b)][0]
    mixing = [n for n in A.METHOD_NAMES if n != "control"]
    print("numpy / jax time:  " + ", ".join(f"{n} {ratio(n, 'numpy', 'jax'):.2f}" for n in mixing))
    print("traced / jax time: " + ", ".join(f"{n} {ratio(n, 'traced', 'jax'):.2f}" for n in A.METHOD_NAMES))
    vmapped = timings[("5 e_mixup members, vmapped", "traced")][0] / 5
    print(f"vmap's price: an E-Mixup member vmapped over 5 costs {vmapped * 1e3:.3f} ms, "
          f"{vmapped / timings[('e_mixup', 'traced')][0]:.2f}x the traced member alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
