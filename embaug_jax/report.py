"""From a finished sweep to the paper's Table 1 and Figures 3-6, written into the workdir.

`write_report(workdir, outputs)` evaluates every member (`embaug_jax.metrics`), groups members
into variants (method, alpha, softness) over trials and seeds, picks each method's best alpha by
mean weighted AUC (as the paper's grid search did), and writes atomically:

- `results.json`: `results["methods"][NAME]` (the chosen variant) and `results["variants"]`
  (every variant, i.e. the alpha grid), each metric as {mean, std, max_dev, min, max, n, values}.
- `results.md`: the Table-1 analogue beside the paper's own numbers, "none" detection and
  calibration, and the alpha-grid table.
- `fig3_threshold_sweep.png`, `fig4_roc.png`, `fig5_training_curves.png`, `fig6_softness.png`
  (only when a soft method ran with >= 2 softness values) and `reliability.png`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from embaug_jax import metrics
from embaug_jax.io import atomic_path, write_json_atomic, write_text_atomic

# The paper's Table-1 order, display names and numbers (weighted AUC, mean +- max deviation).
METHOD_ORDER = ("control", "e_mixup", "e_stitchup", "soft_e_mixup", "soft_e_stitchup")
DISPLAY_NAMES = {
    "control": "Control",
    "e_mixup": "E-Mixup",
    "e_stitchup": "E-Stitchup",
    "soft_e_mixup": "Soft E-Mixup",
    "soft_e_stitchup": "Soft E-Stitchup",
}
PAPER_TABLE1 = {
    "control": (0.9582, 0.0015),
    "e_mixup": (0.9763, 0.0002),
    "e_stitchup": (0.9768, 0.0002),
    "soft_e_mixup": (0.9795, 0.0001),
    "soft_e_stitchup": (0.9812, 0.0004),
}
MEMBER_KEYS = ("method", "alpha", "softness", "trial", "seed")
# Per-member scalar metrics, in the order results.json lists them.
SCALAR_METRICS = ("weighted_auc", "overall_accuracy", "none_accuracy", "seen_accuracy",
                  "none_auroc", "none_aupr", "none_fpr_at_95_tpr", "ece", "final_train_loss")
FIGURES = ("fig3_threshold_sweep.png", "fig4_roc.png", "fig5_training_curves.png",
           "fig6_softness.png", "reliability.png")


@dataclasses.dataclass
class SweepOutputs:
    """What the sweep engine hands over (numpy arrays; validated on construction).

    Attributes:
      members: per member {"method": str, "alpha": float, "softness": float, "trial": int,
        "seed": int}.
      eval_epochs: int [E], the epochs at which `history` was recorded.
      history: "overall_accuracy", "none_accuracy", "train_loss" (and anything else) float
        [M, E], accuracies at the training run's threshold.
      val_probs: float [M, Nv, C], each member's final probabilities on its trial's validation
        split.
      val_labels: int [T, Nv] (all trials have equal validation size).
      seen_mask: bool [T, C], the classes in each trial's training split.
      class_names: [C].
    """

    members: list[dict]
    eval_epochs: np.ndarray
    history: dict[str, np.ndarray]
    val_probs: np.ndarray
    val_labels: np.ndarray
    seen_mask: np.ndarray
    class_names: list[str]

    def __post_init__(self):
        self.eval_epochs = np.asarray(self.eval_epochs).reshape(-1)
        self.val_probs = np.asarray(self.val_probs)
        self.val_labels = np.asarray(self.val_labels)
        self.seen_mask = np.asarray(self.seen_mask)
        self.history = {k: np.asarray(v) for k, v in dict(self.history).items()}
        self.class_names = [str(c) for c in self.class_names]
        self.members = [dict(m) for m in self.members]
        self._validate()

    def _validate(self):
        if self.val_probs.ndim != 3:
            raise ValueError(f"SweepOutputs.val_probs must be [M, Nv, C], got shape "
                             f"{self.val_probs.shape}.")
        m, nv, c = self.val_probs.shape
        if len(self.members) != m:
            raise ValueError(f"SweepOutputs: {len(self.members)} members but val_probs holds {m}.")
        if m == 0:
            raise ValueError("SweepOutputs: no members to report on.")
        for i, member in enumerate(self.members):
            missing = [k for k in MEMBER_KEYS if k not in member]
            if missing:
                raise ValueError(f"SweepOutputs.members[{i}] lacks {missing}; every member needs "
                                 f"{list(MEMBER_KEYS)}.")
        if self.val_labels.ndim != 2 or self.val_labels.shape[1] != nv:
            raise ValueError(f"SweepOutputs.val_labels must be [T, Nv] = [T, {nv}], got shape "
                             f"{self.val_labels.shape}.")
        if not np.issubdtype(self.val_labels.dtype, np.integer):
            raise ValueError(f"SweepOutputs.val_labels must be integer, got "
                             f"{self.val_labels.dtype}.")
        t = self.val_labels.shape[0]
        if self.seen_mask.shape != (t, c):
            raise ValueError(f"SweepOutputs.seen_mask must be [T, C] = [{t}, {c}], got shape "
                             f"{self.seen_mask.shape}.")
        self.seen_mask = self.seen_mask.astype(bool)
        if len(self.class_names) != c:
            raise ValueError(f"SweepOutputs: {len(self.class_names)} class_names for C = {c}.")
        trials = np.array([int(mb["trial"]) for mb in self.members])
        bad = np.flatnonzero((trials < 0) | (trials >= t))
        if bad.size:
            raise ValueError(f"SweepOutputs: members {bad.tolist()} name trials "
                             f"{trials[bad].tolist()}, outside [0, {t}).")
        bad = np.argwhere((self.val_labels < 0) | (self.val_labels >= c))
        if bad.size:
            raise ValueError(f"SweepOutputs.val_labels must lie in [0, {c}); bad (trial, row) "
                             f"{bad[:5].tolist()}.")
        bad = np.flatnonzero(~np.isfinite(self.val_probs).reshape(m, -1).all(axis=1))
        if bad.size:
            raise ValueError(f"SweepOutputs.val_probs has NaN/Inf for members {bad.tolist()} "
                             f"(e.g. {self.members[bad[0]]}): training diverged.")
        e = self.eval_epochs.shape[0]
        for name, values in self.history.items():
            if values.shape != (m, e):
                raise ValueError(f"SweepOutputs.history[{name!r}] must be [M, E] = [{m}, {e}], "
                                 f"got shape {values.shape}.")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@jax.jit
def _device_metrics(probs, labels, seen_mask, threshold, thresholds):
    acc = metrics.threshold_accuracy(probs, labels, seen_mask, threshold)
    return acc, metrics.threshold_sweep(probs, labels, seen_mask, thresholds)


def evaluate_members(outputs: SweepOutputs, *, threshold=metrics.DEFAULT_THRESHOLD,
                     thresholds=metrics.DEFAULT_THRESHOLDS, fpr_grid=metrics.DEFAULT_FPR_GRID,
                     num_bins=15) -> list[dict[str, Any]]:
    """Every metric of every member: scalars plus the curves the figures draw."""
    results = []
    thresholds = np.asarray(thresholds, np.float32)
    for i, member in enumerate(tqdm(outputs.members, desc="evaluating members", leave=False)):
        t = int(member["trial"])
        probs, labels, seen = outputs.val_probs[i], outputs.val_labels[t], outputs.seen_mask[t]
        # One member at a time: [Nv, C] fits where the whole [M, Nv, C] sweep might not.
        acc, sweep = jax.device_get(_device_metrics(
            probs, labels, seen, jnp.float32(threshold), thresholds))
        roc = metrics.ovr_roc(probs, labels, seen, fpr_grid=fpr_grid)
        none_det = metrics.none_detection(probs, labels, seen)
        calib = metrics.calibration(probs, labels, seen, num_bins=num_bins)
        loss = outputs.history.get("train_loss")
        results.append(dict(
            weighted_auc=roc.weighted_auc,
            overall_accuracy=float(acc["overall"]),
            none_accuracy=float(acc["none"]),
            seen_accuracy=float(acc["seen"]),
            none_auroc=none_det["auroc"],
            none_aupr=none_det["aupr"],
            none_fpr_at_95_tpr=none_det["fpr_at_95_tpr"],
            ece=calib["ece"],
            final_train_loss=float(loss[i, -1]) if loss is not None and loss.shape[1] else math.nan,
            sweep_overall=np.asarray(sweep["overall"], np.float64),
            sweep_none=np.asarray(sweep["none"], np.float64),
            roc_tpr=roc.tpr,
            calibration=calib,
        ))
    return results


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, std (population, ddof=0), max |value - mean| (the paper's +-), min, max over the
    finite values; None where nothing is finite (a trial without "none" examples gives NaN)."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    raw = [float(v) if np.isfinite(v) else None for v in values]
    if finite.size == 0:
        return dict(mean=None, std=None, max_dev=None, min=None, max=None, n=0, values=raw)
    mean = float(finite.mean())
    return dict(mean=mean, std=float(finite.std()), max_dev=float(np.max(np.abs(finite - mean))),
                min=float(finite.min()), max=float(finite.max()), n=int(finite.size), values=raw)


def _method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _variant_name(method: str, alpha: float, softness: float) -> str:
    return f"{method}/alpha={alpha:g}/softness={softness:g}"


def _param(value) -> float:
    """A member's alpha / softness as a grouping key: None or NaN (not applicable, e.g. the
    control's alpha) reads as 0; rounded so 0.1 from a config and 0.1 from a float32 array
    land in the same variant."""
    value = math.nan if value is None else float(value)
    return 0.0 if math.isnan(value) else round(value, 6)


def group_variants(members: Sequence[dict]) -> dict[str, dict]:
    """Members grouped by (method, alpha, softness), in the paper's method order, then alpha."""
    groups: dict[tuple, list[int]] = {}
    for i, member in enumerate(members):
        key = (str(member["method"]), _param(member["alpha"]), _param(member["softness"]))
        groups.setdefault(key, []).append(i)
    ordered = sorted(groups, key=lambda k: (_method_rank(k[0]), k[1], k[2]))
    return {_variant_name(*k): dict(method=k[0], alpha=k[1], softness=k[2], members=groups[k])
            for k in ordered}


def _nanreduce(fn, a, axis=0):
    """np.nanmean & co. without the all-NaN warning: an all-NaN slice just gives NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(a, axis=axis)


def _nan_or(x, default=-math.inf):
    return default if x is None or not np.isfinite(x) else x


def _build_results(outputs, per_member, variants, threshold, thresholds,
                   fpr_grid) -> dict[str, Any]:
    variant_results = {}
    for name, v in variants.items():
        idx = v["members"]
        entry = dict(method=v["method"], alpha=v["alpha"], softness=v["softness"],
                     num_members=len(idx),
                     trials=sorted({int(outputs.members[i]["trial"]) for i in idx}),
                     seeds=sorted({int(outputs.members[i]["seed"]) for i in idx}))
        for key in SCALAR_METRICS:
            entry[key] = summarize([per_member[i][key] for i in idx])
        sweep = {k: np.stack([per_member[i][f"sweep_{k}"] for i in idx])
                 for k in ("overall", "none")}
        entry["threshold_sweep"] = dict(
            thresholds=[float(x) for x in thresholds],
            **{f"{k}_mean": _json_list(_nanreduce(np.nanmean, a)) for k, a in sweep.items()},
            **{f"{k}_min": _json_list(_nanreduce(np.nanmin, a)) for k, a in sweep.items()},
            **{f"{k}_max": _json_list(_nanreduce(np.nanmax, a)) for k, a in sweep.items()})
        # Figure 4's curve: the support-weighted mean ROC, averaged over the variant's members.
        entry["roc"] = dict(fpr=_json_list(fpr_grid), tpr_mean=_json_list(_nanreduce(
            np.nanmean, np.stack([per_member[i]["roc_tpr"] for i in idx]))))
        variant_results[name] = entry
    methods = {}
    for name, entry in variant_results.items():
        best = methods.get(entry["method"])
        # Strictly better only, so a tie keeps the smaller alpha (sorted first).
        if best is None or (_nan_or(entry["weighted_auc"]["mean"])
                            > _nan_or(variant_results[best]["weighted_auc"]["mean"])):
            methods[entry["method"]] = name
    return dict(
        threshold=float(threshold),
        thresholds=[float(x) for x in thresholds],
        num_members=len(outputs.members),
        num_trials=int(outputs.val_labels.shape[0]),
        num_validation=int(outputs.val_labels.shape[1]),
        num_classes=len(outputs.class_names),
        num_seen_classes=[int(s) for s in outputs.seen_mask.sum(axis=1)],
        num_none_examples=[int((~outputs.seen_mask[t][outputs.val_labels[t]]).sum())
                           for t in range(outputs.val_labels.shape[0])],
        methods={m: dict(variant=name, **variant_results[name]) for m, name in methods.items()},
        variants=variant_results,
        paper_table1={m: dict(mean=mu, max_dev=dev) for m, (mu, dev) in PAPER_TABLE1.items()},
    )


def _json_list(a) -> list:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, np.float64)]


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _fmt(stat: dict, *, scale=1.0, digits=4, dev="max_dev") -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["n"] < 2:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat[dev] * scale:.{digits}f}"


def _fmt_param(entry: dict, key: str) -> str:
    method = entry["method"]
    used = (method != "control") if key == "alpha" else method.startswith("soft_")
    return f"{entry[key]:g}" if used else "-"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """The Table-1 analogue (markdown): best variant per method, mean ± max deviation."""
    t = results["threshold"]
    header = ["Method", "alpha", "softness", "Weighted AUC", f"Overall acc @{t:g} (%)",
              f"None acc @{t:g} (%)", "Paper weighted AUC"]
    rows = []
    for method, entry in results["methods"].items():
        paper = results.get("paper_table1", {}).get(method)
        rows.append([
            DISPLAY_NAMES.get(method, method), _fmt_param(entry, "alpha"),
            _fmt_param(entry, "softness"), _fmt(entry["weighted_auc"]),
            _fmt(entry["overall_accuracy"], scale=100, digits=2),
            _fmt(entry["none_accuracy"], scale=100, digits=2),
            f"{paper['mean']:.4f} ± {paper['max_dev']:.4f}" if paper else "-",
        ])
    return _markdown(header, rows)


def _results_markdown(results: dict, title: str | None) -> str:
    t = results["threshold"]
    parts = [
        f"# {title or 'Results'}",
        "",
        f"{results['num_members']} members over {results['num_trials']} trials; "
        f"{results['num_validation']} validation examples per trial, {results['num_classes']} "
        f"classes ({', '.join(map(str, sorted(set(results['num_seen_classes']))))} seen in "
        f"training; \"none\" examples per trial: {results['num_none_examples']}). Figures are "
        f"mean ± max deviation over trials and seeds, as the paper prints them; accuracies at "
        f"confidence threshold {t:g} (a prediction needs probability strictly above it).",
        "",
        "## Table 1: best alpha per method (by mean weighted AUC)",
        "",
        format_table(results),
        "",
        "## \"None\" detection (score = 1 - max seen probability) and calibration",
        "",
        _markdown(
            ["Method", "None AUROC", "None AUPR", "FPR @ 95% TPR", "ECE (15 bins)"],
            [[DISPLAY_NAMES.get(m, m), _fmt(e["none_auroc"]), _fmt(e["none_aupr"]),
              _fmt(e["none_fpr_at_95_tpr"]), _fmt(e["ece"])]
             for m, e in results["methods"].items()]),
        "",
        "## Every variant (the alpha grid)",
        "",
        _markdown(
            ["Method", "alpha", "softness", "members", "Weighted AUC", "Overall acc (%)",
             "None acc (%)", "None AUROC", "ECE"],
            [[DISPLAY_NAMES.get(e["method"], e["method"]), _fmt_param(e, "alpha"),
              _fmt_param(e, "softness"), str(e["num_members"]), _fmt(e["weighted_auc"]),
              _fmt(e["overall_accuracy"], scale=100, digits=2),
              _fmt(e["none_accuracy"], scale=100, digits=2), _fmt(e["none_auroc"]),
              _fmt(e["ece"])]
             for e in results["variants"].values()]),
        "",
        "## Figures",
        "",
    ]
    parts += [f"![{f}]({f})" for f in results.get("figures", [])]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# Figures (matplotlib's object API with the Agg canvas: no pyplot state, no display needed)
# --------------------------------------------------------------------------------------------


def _new_figure(nrows, ncols, *, width=4.0, height=3.2, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False, **kw))
    return fig, axes


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _label(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def _stack(per_member, idx, key):
    return np.stack([per_member[i][key] for i in idx])


def _fig3_threshold_sweep(path, results, variants, per_member):
    methods = list(results["methods"])
    ncols = min(3, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = _new_figure(nrows, ncols, sharey=True)
    thresholds = np.asarray(results["thresholds"])
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for ax, method in zip(axes.flat, methods):
        idx = variants[results["methods"][method]["variant"]]["members"]
        for key, color, label in (("sweep_overall", "C0", "overall"), ("sweep_none", "C1", "none")):
            curves = _stack(per_member, idx, key)
            ax.plot(thresholds, _nanreduce(np.nanmean, curves), color=color, label=label)
            if len(idx) > 1:
                for fn in (np.nanmin, np.nanmax):
                    ax.plot(thresholds, _nanreduce(fn, curves), ":", color=color, lw=1)
        ax.set_title(_label(method))
        ax.set_xlabel("confidence threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    axes.flat[0].legend(loc="lower left", fontsize="small")
    fig.suptitle("Accuracy vs confidence threshold (mean solid; min / max over trials dotted)")
    _save(fig, path)


def _fig4_roc(path, results, variants, per_member, fpr_grid):
    fig, axes = _new_figure(1, 1, width=5.5, height=5.0)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    for k, (method, entry) in enumerate(results["methods"].items()):
        idx = variants[entry["variant"]]["members"]
        tpr = _nanreduce(np.nanmean, _stack(per_member, idx, "roc_tpr"))
        auc = entry["weighted_auc"]["mean"]
        ax.plot(np.r_[0.0, fpr_grid], np.r_[0.0, tpr], color=f"C{k}",
                lw=3.0 if method == "control" else 1.4,
                label=f"{_label(method)} (AUC {auc:.4f})" if auc is not None else _label(method))
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Weighted mean one-vs-rest ROC\n(seen classes + \"none\", weights = support)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _plot_epochs(ax, epochs, curves, **kw):
    line, = ax.plot(epochs, _nanreduce(np.nanmean, curves), **kw)
    if curves.shape[0] > 1:
        ax.fill_between(epochs, _nanreduce(np.nanmin, curves), _nanreduce(np.nanmax, curves),
                        color=line.get_color(), alpha=0.15, lw=0)


def _fig5_training_curves(path, results, variants, outputs):
    fig, axes = _new_figure(1, 2, width=5.0, height=3.8)
    epochs = outputs.eval_epochs
    for k, (method, entry) in enumerate(results["methods"].items()):
        idx = variants[entry["variant"]]["members"]
        for ax, key in zip(axes[0], ("overall_accuracy", "none_accuracy")):
            if key in outputs.history:
                _plot_epochs(ax, epochs, outputs.history[key][idx], color=f"C{k}",
                             lw=2.5 if method == "control" else 1.4, label=_label(method))
    for ax, title in zip(axes[0], ("overall accuracy", "\"none\" accuracy")):
        ax.set_title(f"{title} during training (mean; band: min-max)")
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    _save(fig, path)


def _softness_sweeps(results: dict) -> list[tuple[str, float, list[str]]]:
    """(soft method, alpha, its variants by softness) for each soft method that ran >= 2
    softness values at one alpha (the alpha with the most; ties: the best variant's alpha)."""
    found = []
    for method in results["methods"]:
        if not method.startswith("soft_"):
            continue
        by_alpha: dict[float, list[str]] = {}
        for name, e in results["variants"].items():
            if e["method"] == method:
                by_alpha.setdefault(e["alpha"], []).append(name)
        best_alpha = results["methods"][method]["alpha"]
        alpha = max(by_alpha, key=lambda a: (len(by_alpha[a]), a == best_alpha))
        if len(by_alpha[alpha]) >= 2:
            found.append((method, alpha, by_alpha[alpha]))
    return found


def _fig6_softness(path, results, variants, outputs, sweeps):
    fig, axes = _new_figure(2, len(sweeps), width=5.0, height=3.4, sharex=True)
    epochs = outputs.eval_epochs
    for col, (method, alpha, names) in enumerate(sweeps):
        base = method[len("soft_"):]
        base_names = [n for n, e in results["variants"].items()
                      if e["method"] == base and e["alpha"] == alpha]
        if not base_names and base in results["methods"]:
            base_names = [results["methods"][base]["variant"]]
        for row, key in enumerate(("overall_accuracy", "none_accuracy")):
            ax = axes[row, col]
            if key not in outputs.history:
                continue
            for k, name in enumerate(names):
                e = results["variants"][name]
                _plot_epochs(ax, epochs, outputs.history[key][variants[name]["members"]],
                             color=f"C{k}", lw=1.4, label=f"softness {e['softness']:g}")
            for name in base_names[:1]:
                e = results["variants"][name]
                _plot_epochs(ax, epochs, outputs.history[key][variants[name]["members"]],
                             color="black", ls="--", lw=1.4,
                             label=f"{_label(base)} (alpha {e['alpha']:g})")
            ax.set_title(f"{_label(method)}, alpha {alpha:g}: "
                         f"{'overall' if row == 0 else 'none'} accuracy")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[1, col].set_xlabel("epoch")
        axes[0, col].legend(fontsize="small")
    _save(fig, path)


def _reliability(path, results, variants, per_member):
    methods = list(results["methods"])
    ncols = min(3, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = _new_figure(nrows, ncols, sharey=True)
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for ax, method in zip(axes.flat, methods):
        entry = results["methods"][method]
        calibs = [per_member[i]["calibration"] for i in variants[entry["variant"]]["members"]]
        edges = calibs[0]["edges"]
        # Pooled over trials: bin means weighted by each trial's bin count.
        count = np.sum([c["count"] for c in calibs], axis=0)
        with np.errstate(all="ignore"):
            acc = np.sum([np.nan_to_num(c["accuracy"]) * c["count"] for c in calibs], 0) / count
            conf = np.sum([np.nan_to_num(c["confidence"]) * c["count"] for c in calibs], 0) / count
        centers = (edges[:-1] + edges[1:]) / 2
        width = np.diff(edges)
        ax.bar(centers, np.nan_to_num(acc), width=width, edgecolor="black", lw=0.5,
               color="C0", alpha=0.8, label="accuracy")
        # The gap between a bar and its marker is the bin's calibration error.
        ax.plot(centers[count > 0], conf[count > 0], "_", color="C3", ms=14, mew=2,
                label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
        ece = entry["ece"]["mean"]
        ax.set_title(f"{_label(method)} (ECE {ece:.3f})" if ece is not None else _label(method))
        ax.set_xlabel("confidence (max seen-class probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    axes.flat[0].legend(loc="upper left", fontsize="small")
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_report(workdir: str | os.PathLike, outputs: SweepOutputs, *,
                 threshold: float = metrics.DEFAULT_THRESHOLD, thresholds=None,
                 title: str | None = None, num_bins: int = 15) -> dict:
    """Evaluates a sweep and writes results.json, results.md and the figures into `workdir`.

    Args:
      workdir: output directory (created if missing).
      outputs: the sweep's `SweepOutputs`.
      threshold: confidence threshold of the accuracies in the tables (paper: 0.6).
      thresholds: Figure 3's sweep (default 0.05, 0.10, ..., 0.95).
      title: heading of results.md.
      num_bins: calibration bins.

    Returns:
      The results dict, as written to results.json.
    """
    if not isinstance(outputs, SweepOutputs):
        raise ValueError(f"write_report: outputs must be a SweepOutputs, got {type(outputs)}.")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"write_report: threshold must lie in [0, 1], got {threshold}.")
    thresholds = np.asarray(metrics.DEFAULT_THRESHOLDS if thresholds is None else thresholds,
                            np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.all(np.isfinite(thresholds)):
        raise ValueError(f"write_report: thresholds must be a non-empty 1-D array of numbers, "
                         f"got {thresholds!r}.")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fpr_grid = metrics.DEFAULT_FPR_GRID

    per_member = evaluate_members(outputs, threshold=threshold, thresholds=thresholds,
                                  fpr_grid=fpr_grid, num_bins=num_bins)
    variants = group_variants(outputs.members)
    results = _build_results(outputs, per_member, variants, threshold, thresholds, fpr_grid)

    figures = []
    _fig3_threshold_sweep(workdir / FIGURES[0], results, variants, per_member)
    _fig4_roc(workdir / FIGURES[1], results, variants, per_member, fpr_grid)
    figures += FIGURES[:2]
    if outputs.eval_epochs.size:
        _fig5_training_curves(workdir / FIGURES[2], results, variants, outputs)
        figures.append(FIGURES[2])
        sweeps = _softness_sweeps(results)
        if sweeps:
            _fig6_softness(workdir / FIGURES[3], results, variants, outputs, sweeps)
            figures.append(FIGURES[3])
    _reliability(workdir / FIGURES[4], results, variants, per_member)
    figures.append(FIGURES[4])
    results["figures"] = list(figures)

    write_json_atomic(workdir / "results.json", results)
    write_text_atomic(workdir / "results.md", _results_markdown(results, title))
    return results
