"""How much of the paper's gain is the "none" class: the methods against the share of validation
rows whose class was held out of training.

  python experiments/none_share.py --data=workdir/demo/extract/embeddings --workdir=workdir/none_share
  python experiments/none_share.py --smoke --workdir=/tmp/none_share_smoke --holdout=0,2,4

Table 1's weighted AUC is ("none" weight) x ("none" AUC) + (1 - weight) x (seen-class AUC), so
its differences between methods depend on how many validation rows are "none". For each count K
in --holdout (default 0, 2, 4, 8, 12) this trains configs/table1.py with K classes held out of
training per trial into <workdir>/holdout_K (a finished one is only re-reported), then plots each
method's weighted AUC, seen-class AUC, "none" AUC, OSCR area, overall and "none" accuracy (at the
config's threshold and at each model's own threshold) and its paired gain over the control
against the "none" share. Every number comes from one procedure, the report's held-out one
(each method's setting chosen on the selection rows, measured on the others) unless
config.report.selection_fraction=0 (then the paper's); the CSV's `procedure` column says which.
Writes none_share.csv and none_share.png into <workdir>. Any --config.* override applies to
every K (e.g. a single alpha: "--config.sweep.alphas=(0.2,)").
"""

import sys
from pathlib import Path

import numpy as np
from common import fmt, parse, run_study, write_csv

PANELS = (("weighted_auc", "weighted AUC (Table 1)"), ("seen_auc", "seen-class AUC"),
          ("none_auroc", "\"none\" AUC"), ("oscr_auc", "OSCR area (every threshold)"),
          ("overall_accuracy", "overall accuracy @ threshold"),
          ("none_accuracy", "\"none\" accuracy @ threshold"),
          ("tuned_none_accuracy", "\"none\" accuracy @ own threshold"))
# The paired gains over the control the CSV holds (mean and 95% t interval).
GAINS = ("weighted_auc", "oscr_auc", "tuned_none_accuracy", "ece_ts")


def _holdouts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--holdout={text!r}: give class counts like 0,2,4,8,12") from None
    if not counts or counts[0] < 0:
        raise SystemExit(f"--holdout={text!r}: give class counts >= 0 like 0,2,4,8,12")
    return counts


def collect(results_by_k: dict[int, dict]) -> list[dict]:
    """One row per (held-out count, method): the "none" share, each metric's mean and range
    over trials and the mean paired gains over the control with their t intervals, all from
    the held-out procedure (the paper's when the report made no selection)."""
    rows = []
    for k, results in results_by_k.items():
        paired = (results.get("paired") or {}).get("methods", {})
        held_out = "selection" in results
        methods = results["selection"]["methods"] if held_out else results["methods"]
        for method, entry in methods.items():
            row = dict(holdout=k, method=method, procedure="held-out" if held_out else "paper",
                       alpha=entry["alpha"], none_share=entry["none_weight"]["mean"])
            for key, _ in PANELS:
                for stat in ("mean", "min", "max"):
                    row[f"{key}_{stat}"] = entry[key][stat]
            for key in GAINS:
                gain = paired.get(method, {}).get(key, {})
                row.update({f"gain_{key}": gain.get("mean"), f"gain_{key}_t_low": gain.get("t_low"),
                            f"gain_{key}_t_high": gain.get("t_high")})
            rows.append(row)
    return rows


def plot(path: Path, rows: list[dict], title: str) -> None:
    from matplotlib.figure import Figure

    from embaug_jax.registry import display_name
    from embaug_jax.util import atomic_path

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = Figure(figsize=(18.0, 7.2), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    nan = lambda x: np.nan if x is None else x  # noqa: E731
    for k, method in enumerate(methods):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["none_share"])
        share = np.array([r["none_share"] for r in mine])
        style = dict(color=f"C{k}", marker="o", lw=2.5 if method == "control" else 1.4,
                     label=display_name(method))
        for ax, (key, label) in zip(axes, PANELS):
            mean = np.array([nan(r[f"{key}_mean"]) for r in mine], float)
            low = np.array([nan(r[f"{key}_min"]) for r in mine], float)
            high = np.array([nan(r[f"{key}_max"]) for r in mine], float)
            ax.plot(share, mean, **style)
            ax.fill_between(share, low, high, color=f"C{k}", alpha=0.12, lw=0)
            ax.set_title(label)
        if method != "control":
            gain = np.array([nan(r["gain_weighted_auc"]) for r in mine], float)
            low = np.array([nan(r["gain_weighted_auc_t_low"]) for r in mine], float)
            high = np.array([nan(r["gain_weighted_auc_t_high"]) for r in mine], float)
            axes[7].errorbar(share + 0.002 * k, gain, yerr=[gain - low, high - gain],
                             capsize=3, **style)
    axes[7].axhline(0, color="grey", lw=0.8)
    axes[7].set_title("gain over the control in weighted AUC\n(paired by trial; 95% t interval)")
    shares = [r["none_share"] for r in rows if r["none_share"] is not None]
    pad = 0.05 * max(max(shares) - min(shares), 0.1)
    for ax in axes:
        ax.set_xlim(min(shares) - pad, max(shares) + pad)
        ax.set_xlabel("\"none\" share of the validation rows")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    procedure = {r["procedure"] for r in rows}
    fig.suptitle(title + f" ({' / '.join(sorted(procedure))} procedure; lines: mean over "
                 "trials; bands: min-max)")
    with atomic_path(path, replace=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(argv):
    args, overrides = parse(argv, __doc__.splitlines()[0], extra=[(
        "--holdout", dict(default="0,2,4,8,12",
                          help="comma-separated counts of classes held out per trial"))])
    counts = _holdouts(args.holdout)
    workdir = Path(args.workdir)
    results_by_k = {}
    for k in counts:
        print(f"\n=== {k} classes held out of training per trial ===", flush=True)
        args.workdir = str(workdir / f"holdout_{k}")
        results_by_k[k] = run_study("table1.py", args,
                                    [*overrides, f"--config.data.holdout_classes={k}"])
    rows = collect(results_by_k)
    header = list(rows[0])
    write_csv(workdir / "none_share.csv", header, [[r[h] for h in header] for r in rows])
    plot(workdir / "none_share.png", rows, f"Held-out classes {counts}")
    print(f"\n{'held out':>8} {'none share':>10} {'method':<16} {'w. AUC':>7} {'seen AUC':>8} "
          f"{'none AUC':>8} {'OSCR':>7} {'gain':>8} {'OSCR gain':>9}")
    for r in rows:
        print(f"{r['holdout']:>8} {fmt(r['none_share'], 3):>10} {r['method']:<16} "
              f"{fmt(r['weighted_auc_mean']):>7} {fmt(r['seen_auc_mean']):>8} "
              f"{fmt(r['none_auroc_mean']):>8} {fmt(r['oscr_auc_mean']):>7} "
              f"{fmt(r['gain_weighted_auc']):>8} {fmt(r['gain_oscr_auc']):>9}")
    print(f"(the {rows[0]['procedure']} procedure)")
    print(f"\n{workdir / 'none_share.csv'}\nfigure: {workdir / 'none_share.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
