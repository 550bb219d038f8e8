"""Evaluation cost at the paper's scale, side by side in one run.

One member: 39,600 validation examples (90% of 44,000) x 171 classes, ~10% of the classes
unseen. Times Table 1's weighted AUC two ways (sklearn on `ovr_scores`; `evaluate.ovr_roc`,
float64 numpy, what the report uses), the Figure-3 threshold sweep (jnp vs a numpy loop), one
member's `evaluate.evaluate_member` (every metric), its post-hoc fits on half its rows
(`evaluate.fit_posthoc`), the paired bootstrap's `evaluate.resampled_metrics` (200 resamples of
the member's rows, as configs/default.py) without and with the post-hoc fits and distance scores,
the distance detectors of one trial (`evaluate.mahalanobis_scores` and `knn_scores` on 4,400
training rows of 4,864 values, the paper's) and `report.write_report` for a small sweep, per
member.

    python benchmarks/metrics_bench.py [--members 10] [--repeats 3] [--dim 4864]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(fn, repeats):
    fn()  # warm-up: compilation, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _member(rng, labels, seen, num_classes, sharpness):
    logits = rng.normal(size=(len(labels), num_classes)) - 3.0
    logits[np.arange(len(labels)), labels] += sharpness
    probs = 1 / (1 + np.exp(-logits))
    return np.round(probs, 3).astype(np.float32)  # rounded like real outputs saturate: ties


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-val", type=int, default=39_600)
    parser.add_argument("--num-classes", type=int, default=171)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=4864, help="embedding size (distances)")
    parser.add_argument("--train-rows", type=int, default=4400, help="training rows (distances)")
    args = parser.parse_args()

    import jax
    from sklearn.metrics import roc_auc_score

    from embaug_jax import configlib, evaluate, report
    from embaug_jax.train.result import SweepResult

    rng = np.random.default_rng(0)
    n, c = args.num_val, args.num_classes
    labels = rng.integers(0, c, n)
    seen = rng.random(c) > 0.1
    probs = _member(rng, labels, seen, c, sharpness=5.0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; one member: N={n}, C={c}, "
          f"{int((~seen).sum())} unseen classes; best of {args.repeats}")

    def sklearn_auc():
        truth, scores, _, _ = evaluate.ovr_scores(probs, labels, seen)
        return roc_auc_score(truth, scores, average="weighted")

    want = sklearn_auc()
    got_np = evaluate.ovr_roc(probs, labels, seen).weighted_auc
    t_sk = _time(sklearn_auc, args.repeats)
    t_np = _time(lambda: evaluate.ovr_roc(probs, labels, seen), args.repeats)
    print(f"weighted AUC  sklearn          {t_sk:7.3f} s  (1.00x)  auc={want:.8f}")
    print(f"weighted AUC  ovr_roc (numpy)  {t_np:7.3f} s  ({t_sk / t_np:.2f}x)  "
          f"|diff|={abs(got_np - want):.1e}  (also computes the Figure-4 curve)")

    thresholds = evaluate.THRESHOLDS

    def numpy_sweep():
        masked = np.where(seen, probs, -np.inf)
        pred, conf = masked.argmax(1), masked.max(1)
        truth_seen = seen[labels]
        return [np.mean(np.where(truth_seen, (conf > t) & (pred == labels), ~(conf > t)))
                for t in thresholds]

    t_sweep_np = _time(numpy_sweep, args.repeats)
    t_sweep_jnp = _time(lambda: evaluate.threshold_sweep(probs, labels, seen)["overall"]
                        .block_until_ready(), args.repeats)
    print(f"threshold sweep ({len(thresholds)} thresholds)  numpy {t_sweep_np:.3f} s, "
          f"jnp {t_sweep_jnp:.3f} s  ({t_sweep_np / t_sweep_jnp:.2f}x)")

    settings = configlib.get_config(Path(__file__).resolve().parent.parent / "configs"
                                    / "default.py")
    counts = evaluate.bootstrap_counts(jax.random.key(0), n,
                                       settings.report.bootstrap_resamples)
    t_boot = _time(lambda: evaluate.resampled_metrics(probs, labels, seen, counts,
                                                      threshold=settings.threshold),
                   args.repeats)
    print(f"bootstrap     resampled_metrics, {len(counts)} resamples  {t_boot:7.3f} s")

    t_member = _time(lambda: evaluate.evaluate_member(probs, labels, seen,
                                                      threshold=settings.threshold),
                     args.repeats)
    print(f"evaluate_member, every metric  {t_member:7.3f} s")
    half = np.arange(n) % 2 == 0
    t_fit = _time(lambda: evaluate.fit_posthoc(probs[half], labels[half], seen), args.repeats)
    fits = evaluate.fit_posthoc(probs[half], labels[half], seen)
    print(f"fit_posthoc on {half.sum()} rows (temperature, vector scaling, threshold, "
          f"detector)  {t_fit:7.3f} s")
    distances = dict(knn=rng.random(n), mahalanobis=rng.random(n))
    t_boot_fits = _time(lambda: evaluate.resampled_metrics(
        probs, labels, seen, counts, threshold=settings.threshold, posthoc=fits,
        embedding_scores=distances), args.repeats)
    print(f"bootstrap     resampled_metrics with post-hoc fits and distance scores  "
          f"{t_boot_fits:7.3f} s")

    train_labels = rng.choice(np.flatnonzero(seen), args.train_rows)
    centres = rng.normal(size=(c, args.dim)).astype(np.float32)
    train_x = centres[train_labels] + rng.normal(size=(args.train_rows, args.dim)).astype(
        np.float32)
    val_x = centres[labels] + rng.normal(size=(n, args.dim)).astype(np.float32)
    t_maha = _time(lambda: evaluate.mahalanobis_scores(train_x, train_labels, val_x), 1)
    t_knn = _time(lambda: evaluate.knn_scores(train_x, val_x), 1)
    print(f"distance detectors, one trial ({args.train_rows} training rows, {n} queries, "
          f"D={args.dim}): Mahalanobis {t_maha:.2f} s, k-NN {t_knn:.2f} s")

    trials = max(1, args.members // 2)
    val_labels = np.stack([rng.integers(0, c, n) for _ in range(trials)])
    seen_mask = np.stack([rng.random(c) > 0.1 for _ in range(trials)])
    members, val_probs = [], []
    for method, sharpness in (("control", 4.0), ("e_mixup", 5.0)):
        for t in range(trials):
            members.append(dict(method=method, alpha=0.2, softness=0.0, trial=t, seed=0))
            val_probs.append(_member(rng, val_labels[t], seen_mask[t], c, sharpness))
    epochs = np.arange(12, 577, 12)
    history = {k: rng.random((len(members), len(epochs))) for k in
               ("overall_accuracy", "none_accuracy", "train_loss")}
    outputs = SweepResult(members, epochs, history, np.stack(val_probs), val_labels,
                          seen_mask, [f"class_{k}" for k in range(c)],
                          threshold=settings.threshold)
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        report.write_report(workdir, outputs, **settings.report)
        t_report = time.perf_counter() - t0
    print(f"write_report  {len(members)} members  {t_report:.2f} s  "
          f"({t_report / len(members):.2f} s per member, figures included)")


if __name__ == "__main__":
    main()
