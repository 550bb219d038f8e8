"""Images per second: Flax EfficientNet vs efficientnet-pytorch, and the two depthwise convs.

    python benchmarks/image_bench.py                      # B0 and B4, batch 8, CPU
    python benchmarks/image_bench.py --variants b0 --batch 32 --repeats 5

Both frameworks run the same variant at its own resolution on the same batch of random
normalised images, in one process, one after the other (never at once). Flax is timed with
each depthwise formulation ("shifted": k*k strided multiply-adds; "grouped": XLA's
feature_group_count convolution). On a machine with a GPU, Flax also runs there (PyTorch stays on
the CPU unless CUDA torch is installed); the ratio column compares like with like only on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds, median seconds of `repeats` further calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def bench_torch(variant: str, x_nhwc: np.ndarray, repeats: int) -> float | None:
    try:
        import torch
        from efficientnet_pytorch import EfficientNet
    except ImportError:
        return None
    model = EfficientNet.from_name(f"efficientnet-{variant}").eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(device)

    def run():
        with torch.inference_mode():
            model.extract_features(x).mean((2, 3)).cpu()

    _, t = _time(run, repeats)
    return len(x_nhwc) / t


def bench_flax(variant: str, x_nhwc: np.ndarray, repeats: int, depthwise: str
               ) -> tuple[float, float]:
    from embaug_jax.embed.efficientnet import model as E

    arch = E.architecture(variant)
    variables = jax.device_put(E.init_variables(arch, 0, randomize_stats=True))
    model = E.EfficientNet(arch, depthwise=depthwise)
    fn = jax.jit(model.apply)
    x = jax.device_put(jnp.asarray(x_nhwc))
    first, t = _time(lambda: fn(variables, x).block_until_ready(), repeats)
    return len(x_nhwc) / t, first


def bench_depthwise(repeats: int) -> list[tuple]:
    """The depthwise layers that dominate B0 / B4 (shape, kernel, stride) alone."""
    from embaug_jax.embed.efficientnet import model as E

    cases = [((8, 112, 112, 96), 3, 2), ((8, 56, 56, 144), 3, 1), ((8, 28, 28, 240), 5, 1),
             ((8, 95, 95, 192), 5, 2), ((8, 24, 24, 672), 5, 1)]
    rows = []
    for shape, k, s in cases:
        x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
        w = {"params": {"kernel": jnp.ones((k, k, 1, shape[-1]), jnp.float32)}}
        times = {}
        for impl in ("shifted", "grouped"):
            fn = jax.jit(E.DepthwiseConv(k, s, "tf", impl).apply)
            _, times[impl] = _time(lambda: fn(w, x).block_until_ready(), repeats)
        rows.append((shape, k, s, times["shifted"] * 1e3, times["grouped"] * 1e3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="b0,b4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip efficientnet-pytorch")
    parser.add_argument("--no-depthwise", action="store_true",
                        help="skip the depthwise convolutions timed alone")
    args = parser.parse_args()

    from embaug_jax.embed.efficientnet import model as E

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"batch {args.batch}, median of {args.repeats} after one warm-up call")
    header = (f"{'variant':<7} {'res':>4} {'torch img/s':>12} {'flax shifted':>13} "
              f"{'flax grouped':>13} {'best/torch':>10} {'compile s (sh/gr)':>18}")
    print(header)
    print("-" * len(header))
    for variant in args.variants.split(","):
        res = E.architecture(variant).resolution
        x = np.random.default_rng(0).normal(size=(args.batch, res, res, 3)).astype(np.float32)
        torch_ips = None if args.no_torch else bench_torch(variant, x, args.repeats)
        shifted, c_sh = bench_flax(variant, x, args.repeats, "shifted")
        grouped, c_gr = bench_flax(variant, x, args.repeats, "grouped")
        ratio = f"{max(shifted, grouped) / torch_ips:10.2f}" if torch_ips else f"{'-':>10}"
        torch_s = f"{torch_ips:12.2f}" if torch_ips else f"{'-':>12}"
        print(f"{variant:<7} {res:>4} {torch_s} {shifted:13.2f} {grouped:13.2f} {ratio} "
              f"{c_sh:8.1f}/{c_gr:<8.1f}")
    if args.no_depthwise:
        return
    print("\ndepthwise conv alone (ms per call, batch 8, TF padding)")
    print(f"{'input':<20} {'k':>2} {'s':>2} {'shifted':>9} {'grouped':>9} {'grouped/shifted':>16}")
    for shape, k, s, t_sh, t_gr in bench_depthwise(args.repeats):
        print(f"{str(shape):<20} {k:>2} {s:>2} {t_sh:9.2f} {t_gr:9.2f} {t_gr / t_sh:16.2f}")
    print(f"\ndefault depthwise on {jax.default_backend()}: {E.resolve_depthwise_impl('auto')}")


if __name__ == "__main__":
    main()
