"""Figures 3-6, the reliability diagram and the AUC decomposition (matplotlib's object API with
the Agg canvas: no pyplot state, no display needed)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from embaug_jax import registry
from embaug_jax.report.results import entry_settings, nanreduce
from embaug_jax.report.formatting import metric_label
from embaug_jax.util import atomic_path

if TYPE_CHECKING:
    from embaug_jax.train.result import SweepResult


def plan_figures(results: dict, variants: dict[str, dict], per_member: list[dict],
                 result: SweepResult, fpr_grid) -> dict[str, Callable[[Path], None]]:
    """The figures a report draws, by their `embaug_jax.workdir.FIGURES` name, in that order:
    each a function that draws it to the path it is given.

    Learning curves need evaluations during training (`result.eval_epochs`); Figure 6 needs a
    soft method that ran >= 2 softness values at one alpha; the OSCR curves need "none" rows;
    the settings figure needs a method that ran several values of a setting (results["axes"]).
    """
    plans = {"threshold_sweep": (_fig3_threshold_sweep, (results, variants, per_member)),
             "roc": (_fig4_roc, (results, variants, per_member, fpr_grid))}
    if result.eval_epochs.size:
        plans["training_curves"] = (_fig5_training_curves, (results, variants, result))
        sweeps = _softness_sweeps(results)
        if sweeps:
            plans["softness"] = (_fig6_softness, (results, variants, result, sweeps))
    plans["reliability"] = (_reliability, (results, variants, per_member))
    plans["auc_decomposition"] = (_auc_decomposition,
                                  (results, variants, per_member, result.members))
    if any(results["num_none_examples"]):
        plans["oscr"] = (_oscr, (results, variants, per_member, fpr_grid))
    if results.get("axes", {}).get("settings"):
        plans["settings"] = (_settings, (results,))
    # Each drawing function takes the path first: bind its other arguments behind it.
    return {name: functools.partial(_draw_to, draw, args) for name, (draw, args) in plans.items()}


def _draw_to(draw: Callable, args: tuple, path: Path) -> None:
    draw(path, *args)


def _new_figure(nrows, ncols, *, width=4.0, height=3.2, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False, **kw))
    return fig, axes


def _save(fig, path: Path) -> None:
    with atomic_path(path, replace=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _label(method: str) -> str:
    return registry.display_name(method)


def _unsoftened(method: str) -> str | None:
    """The method a soft method softens (soft_e_mixup -> e_mixup): the first of its kind that
    reads the same settings but softness, is not soft and has no transform; None if not soft."""
    try:
        row = registry.method(method)
    except registry.UnknownNameError:
        return None
    if not row.soft:
        return None
    reads = tuple(n for n in row.reads if n != "softness")
    return next((m.name for m in registry.methods(kind=row.kind)
                 if not m.soft and m.transform is None and m.reads == reads), None)


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
            ax.plot(thresholds, nanreduce(np.nanmean, curves), color=color, label=label)
            if len(idx) > 1:
                for fn in (np.nanmin, np.nanmax):
                    ax.plot(thresholds, nanreduce(fn, curves), ":", color=color, lw=1)
        ax.set_title(_label(method))
        ax.set_xlabel("confidence threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    axes.flat[0].legend(loc="lower left", fontsize="small")
    fig.suptitle("Accuracy vs confidence threshold (mean solid; min / max over trials dotted)")
    _save(fig, path)


def _mean_curves(ax, results, variants, per_member, fpr_grid, curve: str, area: str,
                 name: str) -> None:
    """Each method's Table-1 variant's `curve` on the FPR grid, averaged over its members, its
    mean `area` in the legend as "(name 0.1234)"; the control drawn thickest."""
    for k, (method, entry) in enumerate(results["methods"].items()):
        idx = variants[entry["variant"]]["members"]
        mean = nanreduce(np.nanmean, _stack(per_member, idx, curve))
        value = entry[area]["mean"]
        ax.plot(np.r_[0.0, fpr_grid], np.r_[0.0, mean], color=f"C{k}",
                lw=3.0 if method == "control" else 1.4,
                label=f"{_label(method)} ({name} {value:.4f})" if value is not None
                else _label(method))


def _fig4_roc(path, results, variants, per_member, fpr_grid):
    fig, axes = _new_figure(1, 1, width=5.5, height=5.0)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    _mean_curves(ax, results, variants, per_member, fpr_grid, "roc_tpr", "weighted_auc", "AUC")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Weighted mean one-vs-rest ROC\n(seen classes + \"none\", weights = support)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _plot_epochs(ax, epochs, curves, **kw):
    line, = ax.plot(epochs, nanreduce(np.nanmean, curves), **kw)
    if curves.shape[0] > 1:
        ax.fill_between(epochs, nanreduce(np.nanmin, curves), nanreduce(np.nanmax, curves),
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


def _others(entry: dict) -> dict[str, float]:
    """A variant's settings but alpha and softness (a weight decay grid's, say)."""
    return {k: v for k, v in entry_settings(entry).items() if k not in ("alpha", "softness")}


def _softness_sweeps(results: dict) -> list[tuple[str, float, list[str]]]:
    """(soft method, alpha, its variants by softness) for each soft method that ran >= 2
    softness values at one alpha (the alpha with the most; ties: the best variant's alpha),
    its other settings at the best variant's."""
    found = []
    for method in results["methods"]:
        if _unsoftened(method) is None:
            continue
        others = _others(results["methods"][method])
        by_alpha: dict[float, list[str]] = {}
        for name, e in results["variants"].items():
            if e["method"] == method and _others(e) == others:
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
        base = _unsoftened(method)
        others = _others(results["variants"][names[0]])  # a weight decay grid's, say
        base_names = [n for n, e in results["variants"].items()
                      if e["method"] == base and e["alpha"] == alpha and _others(e) == others]
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




def _auc_decomposition(path, results, variants, per_member, members):
    """Left: each method's seen-class AUC, "none" AUC and weighted AUC. Right: its gain over the
    control in weighted AUC, split exactly into the seen-class part and the "none" part."""
    from embaug_jax.report.statistics import pair_members

    methods = list(results["methods"])
    fig, axes = _new_figure(1, 2, width=max(4.5, 1.1 * len(methods) + 2), height=3.8)
    left, right = axes[0]
    x = np.arange(len(methods))
    chosen = [variants[results["methods"][m]["variant"]]["members"] for m in methods]
    for dx, key, color, label in ((-0.22, "seen_auc", "C0", "seen classes"),
                                  (0.0, "weighted_auc", "black", "weighted (Table 1)"),
                                  (0.22, "none_auroc", "C1", "\"none\"")):
        values = [np.array([per_member[i][key] for i in idx], float) for idx in chosen]
        means = np.array([nanreduce(np.nanmean, v) for v in values])
        low = means - np.array([nanreduce(np.nanmin, v) for v in values])
        high = np.array([nanreduce(np.nanmax, v) for v in values]) - means
        left.errorbar(x + dx, means, yerr=[np.nan_to_num(low), np.nan_to_num(high)], fmt="o",
                      color=color, capsize=3, label=label)
    weight = np.nanmean([per_member[i]["none_weight"] for idx in chosen for i in idx])
    left.set_title(f"AUC by part (\"none\" weight {weight:.3f}; bars: min-max)")
    left.set_xticks(x, [_label(m) for m in methods], rotation=30, ha="right")
    left.set_ylabel("AUC")
    left.grid(alpha=0.3)
    left.legend(fontsize="small")
    others = [m for m in methods if m != "control"]
    if "control" not in methods or not others:
        right.set_visible(False)
        _save(fig, path)
        return
    control = chosen[methods.index("control")]
    # Within a trial both members share the "none" weight, so the gain in weighted AUC is exactly
    # the gain in the seen part plus the gain in the "none" part.
    gain = {part: [] for part in ("seen_part", "none_part")}
    for method in others:
        pairs = pair_members(members, chosen[methods.index(method)], control)
        for part in gain:
            gain[part].append(np.mean([per_member[i][part] - per_member[c][part]
                                       for i, c in pairs]) if pairs else np.nan)
    xs = np.arange(len(others))
    seen_gain, none_gain = np.array(gain["seen_part"]), np.array(gain["none_part"])
    right.bar(xs - 0.2, seen_gain, 0.4, color="C0", label="seen-class part")
    right.bar(xs + 0.2, none_gain, 0.4, color="C1", label="\"none\" part")
    right.plot(xs, seen_gain + none_gain, "D", color="black", label="weighted AUC (their sum)")
    right.axhline(0, color="grey", lw=0.8)
    right.set_xticks(xs, [_label(m) for m in others], rotation=30, ha="right")
    right.set_title("Gain over the control, paired by trial (mean)")
    right.set_ylabel("difference in weighted AUC")
    right.grid(alpha=0.3)
    right.legend(fontsize="small")
    _save(fig, path)


def _oscr(path, results, variants, per_member, fpr_grid):
    """Each method's mean OSCR curve: seen rows accepted with their true class against "none"
    rows accepted, as the threshold falls."""
    fig, axes = _new_figure(1, 1, width=5.5, height=5.0)
    ax = axes[0, 0]
    _mean_curves(ax, results, variants, per_member, fpr_grid, "oscr_ccr", "oscr_auc", "area")
    ax.set_xlabel("false acceptance rate (\"none\" rows accepted)")
    ax.set_ylabel("correct classification rate (seen rows)")
    ax.set_title("Open-set classification rate curves\n(each method's Table-1 variant; mean "
                 "over trials)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _settings(path, results):
    """results["axes"]: a panel per metric (rows) and swept setting (columns), a line per method
    through its values (mean; bars: min-max over trials), the chosen value circled."""
    axes_ = results["axes"]
    settings, metrics = list(axes_["settings"]), axes_["metrics"]
    fig, axes = _new_figure(len(metrics), len(settings), width=4.4, height=3.4)
    order = list(registry.method_names())
    for col, axis in enumerate(settings):
        line = axes_["settings"][axis]
        values = np.asarray(line["values"], float)
        # A grid spanning decades (a weight decay, a learning rate) reads best on a log axis.
        log = values.min() > 0 and values.max() / values.min() >= 10
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            label, scale, _ = metric_label(metric)
            for method, e in line["methods"].items():
                k = order.index(method) if method in order else len(order)
                have = [i for i, stat in enumerate(e[metric]) if stat and stat["mean"] is not None]
                x = values[have]
                mean = np.array([e[metric][i]["mean"] for i in have]) * scale
                low = mean - np.array([e[metric][i]["min"] for i in have]) * scale
                high = np.array([e[metric][i]["max"] for i in have]) * scale - mean
                ax.errorbar(x, mean, yerr=[low, high], fmt="o-", color=f"C{k % 10}", capsize=3,
                            lw=2.5 if method == "control" else 1.4, ms=4, label=_label(method))
                chosen = [i for i in have if values[i] == e["chosen"]]
                if chosen:
                    ax.plot(values[chosen], np.array([e[metric][i]["mean"] for i in chosen])
                            * scale, "o", ms=11, mfc="none", mec=f"C{k % 10}", mew=1.5)
            if log:
                ax.set_xscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    fig.suptitle("Each method along each swept setting, the others at its chosen variant "
                 "(circled: chosen)")
    _save(fig, path)

