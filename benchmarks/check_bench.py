"""Times `check_augmentation` over every built-in method and baseline, as the test suite runs it.

    python benchmarks/check_bench.py                  # XLA optimisations off, as in the tests
    python benchmarks/check_bench.py --optimized      # XLA's default compile
    python benchmarks/check_bench.py e_mixup control  # some methods only

Prints each method's wall and CPU seconds and the total. Compiling dominates (the Beta sampler's
rejection loop once per batch shape, then jax.jit(jax.vmap(fn)) and the gradient once per
method), so the CPU column is the figure to trust on a shared machine; run it in a fresh
process, since a warm compile cache makes later methods look cheaper.
"""

from __future__ import annotations

import argparse
import time

import jax

from embaug_jax.testing import MAX_EXAMPLES, TRANSFORM_EXAMPLES, check_augmentation, method_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help="method names (default: every built-in)")
    parser.add_argument("--optimized", action="store_true",
                        help="compile with XLA's optimisations (the tests turn most off)")
    args = parser.parse_args()
    jax.config.update("jax_disable_most_optimizations", not args.optimized)
    names = args.methods or [case.id for case in method_cases()]
    print(f"check_augmentation on {len(names)} methods: {MAX_EXAMPLES} examples per property "
          f"({TRANSFORM_EXAMPLES} for jit/vmap/differentiable), XLA optimisations "
          f"{'on' if args.optimized else 'mostly off'}, JAX {jax.__version__} on "
          f"{jax.devices()[0].device_kind}")
    print(f"{'method':<18} {'properties':>10} {'wall s':>8} {'cpu s':>8}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for name in names:
        wall, cpu = time.perf_counter(), time.process_time()
        report = check_augmentation(name)
        print(f"{name:<18} {len(report.results):>10} {time.perf_counter() - wall:>8.1f} "
              f"{time.process_time() - cpu:>8.1f}")
    print(f"{'total':<18} {'':>10} {time.perf_counter() - wall0:>8.1f} "
          f"{time.process_time() - cpu0:>8.1f}")


if __name__ == "__main__":
    main()
