"""vmap's price on the traced augmentation: one E-Mixup member alone against 5 vmapped.

  python benchmarks/augment_vmap_bench.py                      # this tree
  python benchmarks/augment_vmap_bench.py --src=/tmp/old      # another checkout, e.g. a
                                                               # `git worktree add /tmp/old REV`

`augment_batch` at the paper's input size (B=256, D=4864, C=171, alpha 0.2, halving), jitted;
the vmapped case gives every member its own batch, as a sweep does, and so does a third case, the
same members one after another in one program (`lax.map`, no vmap): vmapped / one after another
is vmap's own price, one after another / alone what the members' data costs once it no longer
fits the cache (the lone member reuses one batch, hot from its last call). Reports wall time (median and
minimum) and process CPU time (median, all threads), per member: on a shared machine the CPU
time is the steadier measure of work.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=None, help="import embaug_jax from this checkout")
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args(argv)
    if args.src:
        sys.path.insert(0, args.src)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from embaug_jax import augment

    b, d, c, m = 256, 4864, 171, args.members
    xs = jax.random.normal(jax.random.key(1), (m, b, d))
    ys = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (m, b), 0, c), c)
    keys = jax.random.split(jax.random.key(0), m)
    params = augment.method_params("e_mixup", 0.2)
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[params] * m)

    def aug(k, x, y, p):
        return augment.augment_batch(k, x, y, p)

    alone, vmapped = jax.jit(aug), jax.jit(jax.vmap(aug))
    # The same members one after another in one program, no vmap: what the members' data costs
    # when it no longer fits the cache, separated from what vmap itself costs.
    mapped = jax.jit(lambda *a: jax.lax.map(lambda t: aug(*t), a))

    def timed(f, *a):
        jax.block_until_ready(f(*a))
        wall, cpu = [], []
        for _ in range(args.repeats):
            t, u = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(*a))
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - u)
        return np.array([np.median(wall), np.min(wall), np.median(cpu)]) * 1e3

    one = timed(alone, keys[0], xs[0], ys[0], params)
    many = timed(vmapped, keys, xs, ys, stacked) / m
    seq = timed(mapped, keys, xs, ys, stacked) / m
    print(f"embaug_jax from {augment.__file__}")
    print(f"{'ms per member':24s} {'wall median':>11s} {'wall min':>8s} {'CPU median':>10s}")
    print(f"{'alone':24s} {one[0]:11.3f} {one[1]:8.3f} {one[2]:10.3f}")
    print(f"{f'{m} vmapped':24s} {many[0]:11.3f} {many[1]:8.3f} {many[2]:10.3f}")
    print(f"{f'{m} one after another':24s} {seq[0]:11.3f} {seq[1]:8.3f} {seq[2]:10.3f}")
    print(f"vmapped / alone: wall min {many[1] / one[1]:.2f}x, CPU {many[2] / one[2]:.2f}x")
    print(f"vmapped / one after another: wall min {many[1] / seq[1]:.2f}x, CPU "
          f"{many[2] / seq[2]:.2f}x")


if __name__ == "__main__":
    main()
