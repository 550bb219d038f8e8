"""Results of a sweep: members grouped into variants, summarised over trials, best alpha per method.

`build_results(outputs)` turns the sweep's per-member evaluations into the dict written to
`results.json`: `results["methods"][NAME]` (the chosen variant) and `results["variants"]` (every
variant, i.e. the alpha grid), each metric as {mean, std, max_dev, min, max, n, values}.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from embaug_jax import augment, metrics

if TYPE_CHECKING:
    from embaug_jax.train.engine import SweepResult

# The paper's display names and numbers (weighted AUC, mean +- max deviation); methods are
# listed in `augment.METHOD_NAMES` order.
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
# Per-member scalar metrics, in the order results.json lists them.
SCALAR_METRICS = ("weighted_auc", "overall_accuracy", "none_accuracy", "seen_accuracy",
                  "none_auroc", "none_aupr", "none_fpr_at_95_tpr", "ece", "final_train_loss")

def evaluate_members(outputs: SweepResult, *, threshold=metrics.DEFAULT_THRESHOLD,
                     thresholds=metrics.DEFAULT_THRESHOLDS, fpr_grid=metrics.DEFAULT_FPR_GRID,
                     num_bins=15) -> list[dict[str, Any]]:
    """`metrics.evaluate_member` for every member, plus its final training loss."""
    results = []
    loss = outputs.history.get("train_loss")
    for i, member in enumerate(tqdm(outputs.members, desc="evaluating members", leave=False)):
        t = int(member["trial"])
        # One member at a time: [Nv, C] fits where the whole [M, Nv, C] sweep might not.
        result = metrics.evaluate_member(
            outputs.val_probs[i], outputs.val_labels[t], outputs.seen_mask[t],
            threshold=threshold, thresholds=thresholds, fpr_grid=fpr_grid, num_bins=num_bins)
        result["final_train_loss"] = (float(loss[i, -1]) if loss is not None and loss.shape[1]
                                      else math.nan)
        results.append(result)
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
    order = augment.METHOD_NAMES
    return (order.index(method) if method in order else len(order), method)


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


