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

import embaug_jax.train.optim  # noqa: F401 (registers the built-in methods and settings)
from embaug_jax import evaluate, registry
from embaug_jax.report.fits import fit_members
from embaug_jax.train.result import MEMBER_KEYS

if TYPE_CHECKING:
    from embaug_jax.train.result import SweepResult

# The paper's numbers (weighted AUC, mean +- max deviation).
PAPER_TABLE1 = {
    "control": (0.9582, 0.0015),
    "e_mixup": (0.9763, 0.0002),
    "e_stitchup": (0.9768, 0.0002),
    "soft_e_mixup": (0.9795, 0.0001),
    "soft_e_stitchup": (0.9812, 0.0004),
}
# Per-member scalar metrics, in the order results.json lists them: Table 1's, then the rest of
# evaluate.RESAMPLED_METRICS (threshold-free "none", detectors, tuned threshold, calibration).
_TABLE1_SCALARS = ("weighted_auc", "seen_auc", "none_weight", "seen_part", "none_part",
                   "overall_accuracy", "none_accuracy", "seen_accuracy", "none_auroc",
                   "none_aupr", "none_fpr_at_95_tpr", "ece", "final_train_loss")
SCALAR_METRICS = _TABLE1_SCALARS + tuple(k for k in evaluate.RESAMPLED_METRICS
                                         if k not in _TABLE1_SCALARS)


def save_predictions(path, outputs: SweepResult) -> None:
    """Writes a sweep's outputs (final validation probabilities, labels, splits, members,
    learning curves) as one compressed npz, atomically; `load_predictions` reads it back."""
    import json

    from embaug_jax.util import atomic_path

    arrays = dict(val_probs=outputs.val_probs, val_labels=outputs.val_labels,
                  seen_mask=outputs.seen_mask, eval_epochs=outputs.eval_epochs,
                  class_names=np.asarray(outputs.class_names, dtype=np.str_),
                  members=np.asarray(json.dumps(outputs.members, default=_json_scalar)))
    arrays.update({f"history/{k}": v for k, v in outputs.history.items()})
    for name in ("threshold", "val_idx", "train_idx"):
        if getattr(outputs, name) is not None:
            arrays[name] = getattr(outputs, name)
    with atomic_path(path, replace=True) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def _json_scalar(x):
    """numpy scalars (a member's alpha as np.float32, say) as plain JSON numbers."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def load_predictions(path) -> SweepResult:
    """A sweep's `SweepResult` from the predictions.npz its run wrote (a workdir or the file):
    re-report or analyse a finished sweep without restoring a checkpoint."""
    import json
    from pathlib import Path

    from embaug_jax.train.result import SweepResult
    from embaug_jax.util import DamagedOutput, check_input, load_npz
    from embaug_jax.workdir import Workdir

    path = Path(path)
    if path.suffix != ".npz":  # a workdir
        path = Workdir(path).predictions
    check_input(path, "a sweep's predictions",
                missing=f"{path} is missing: a finished `embaug train` run writes it beside "
                        "results.json; rerun the sweep's command to make it.")
    # Rerunning a finished sweep without the file restores its last checkpoint and writes the
    # predictions again; without checkpoints it trains again.
    remedy = ("Delete it and rerun the `embaug train` command that made this workdir: it writes "
              "the file again from the run's last checkpoint.")
    z = load_npz(path, "a sweep's predictions",
                 f"It is not the predictions file a sweep writes. {remedy}", error=DamagedOutput)
    try:
        history = {k[len("history/"):]: z[k] for k in z if k.startswith("history/")}
        extra = {"threshold": float(z["threshold"])} if "threshold" in z else {}
        return SweepResult(
            members=json.loads(str(z["members"])), eval_epochs=z["eval_epochs"],
            history=history, val_probs=z["val_probs"], val_labels=z["val_labels"],
            seen_mask=z["seen_mask"], class_names=[str(c) for c in z["class_names"]],
            val_idx=z.get("val_idx"), train_idx=z.get("train_idx"), **extra)
    except (KeyError, ValueError, TypeError) as e:  # a missing array, a damaged members record
        raise DamagedOutput(f"{path} lacks part of a sweep's predictions ({type(e).__name__}: "
                            f"{e}). {remedy}") from e


def evaluate_members(outputs: SweepResult, *, threshold, thresholds=evaluate.THRESHOLDS,
                     fpr_grid=evaluate.FPR_GRID, num_bins=evaluate.NUM_BINS,
                     scores: Sequence[dict] | None = None,
                     detectors=evaluate.OUTPUT_DETECTORS) -> list[dict[str, Any]]:
    """`evaluate.evaluate_member` for every member, plus its final training loss.

    Args:
      scores: per trial, the embedding detectors' scores of its validation rows
        (`report.fits.embedding_scores`), or None.
      detectors: the output detectors scored (`report.fits.output_detectors`).
    """
    # One member at a time: [Nv, C] fits where the whole [M, Nv, C] sweep might not.
    return [_evaluate_on(outputs, i, None, threshold=threshold, thresholds=thresholds,
                         fpr_grid=fpr_grid, num_bins=num_bins, scores=scores,
                         detectors=detectors)
            for i in tqdm(range(len(outputs.members)), desc="evaluating members", leave=False)]


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
    order = registry.method_names()
    return (order.index(method) if method in order else len(order), method)


def _setting_names(members: Sequence[dict]) -> list[str]:
    """The settings members record: the registered ones in order, then any others (a run that
    registered its own, re-reported without them) by name."""
    registered = [s.name for s in registry.settings()]
    others = {k for m in members for k in m} - set(registered) - set(MEMBER_KEYS)
    return registered + sorted(others)


def swept_settings(members: Sequence[dict]) -> list[str]:
    """The settings every method reads (`registry.Setting.every_method`) that the members ran
    more than one value of: the ones that tell variants apart."""
    return [s.name for s in registry.settings(every_method=True)
            if len({_param(m.get(s.name)) for m in members}) > 1]


def _shown(values: dict[str, float], swept: Sequence[str]) -> dict[str, float]:
    """The settings a variant records and is named by: the column ones (the paper's alpha and
    softness) always, the swept ones every method reads always, the methods' others when not
    0 (a setting every method reads at one value across the sweep is the run's, not the
    variant's)."""
    columns = {s.name for s in registry.settings() if s.column}
    every = {s.name for s in registry.settings(every_method=True)}
    return {k: v for k, v in values.items()
            if k in columns or k in swept or (v and k not in every)}


def _param(value) -> float:
    """A member's setting as a grouping key: None or NaN (not applicable, e.g. the control's
    alpha) reads as 0; rounded to 6 significant digits so 0.1 from a config and 0.1 from a
    float32 array land in the same variant (and a weight decay of 1e-7 stays apart from 0)."""
    value = math.nan if value is None else float(value)
    return 0.0 if math.isnan(value) else float(f"{value:.6g}")


def group_variants(members: Sequence[dict]) -> dict[str, dict]:
    """Members grouped by method and settings (a member without one reads 0), in the
    registry's method order, then the settings' values; each variant named like
    "e_mixup/alpha=0.2/softness=0", or "e_mixup/alpha=0.2/softness=0/weight_decay=0.001" in a
    sweep over weight decay (see `_shown`)."""
    names = _setting_names(members)
    swept = swept_settings(members)
    groups: dict[tuple, list[int]] = {}
    for i, member in enumerate(members):
        key = (str(member["method"]), *(_param(member.get(n)) for n in names))
        groups.setdefault(key, []).append(i)
    ordered = sorted(groups, key=lambda k: (_method_rank(k[0]), *k[1:]))
    out = {}
    for k in ordered:
        shown = _shown(dict(zip(names, k[1:])), swept)
        name = k[0] + "".join(f"/{n}={v:g}" for n, v in shown.items())
        out[name] = dict(method=k[0], **shown, members=groups[k])
    return out


def variant_settings(variant: dict) -> dict[str, float]:
    """The settings a variant of `group_variants` records."""
    return {k: v for k, v in variant.items() if k not in ("method", "members")}


def nanreduce(fn, a, axis=0):
    """np.nanmean & co. without the all-NaN warning: an all-NaN slice just gives NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(a, axis=axis)


def build_results(outputs, per_member, variants, threshold, thresholds,
                  fpr_grid) -> dict[str, Any]:
    """The dict results.json holds: every variant summarised over its members (`per_member`,
    `evaluate_members`' list), each method's best variant, and the paper's Table 1 beside them."""
    variant_results = {}
    for name, v in variants.items():
        idx = v["members"]
        entry = dict(method=v["method"], **variant_settings(v), num_members=len(idx),
                     trials=sorted({int(outputs.members[i]["trial"]) for i in idx}),
                     seeds=sorted({int(outputs.members[i]["seed"]) for i in idx}))
        for key in SCALAR_METRICS:
            entry[key] = summarize([per_member[i][key] for i in idx])
        sweep = {k: np.stack([per_member[i][f"sweep_{k}"] for i in idx])
                 for k in ("overall", "none")}
        entry["threshold_sweep"] = dict(
            thresholds=[float(x) for x in thresholds],
            **{f"{k}_mean": _json_list(nanreduce(np.nanmean, a)) for k, a in sweep.items()},
            **{f"{k}_min": _json_list(nanreduce(np.nanmin, a)) for k, a in sweep.items()},
            **{f"{k}_max": _json_list(nanreduce(np.nanmax, a)) for k, a in sweep.items()})
        # Figure 4's curve: the support-weighted mean ROC, averaged over the variant's members.
        entry["roc"] = dict(fpr=_json_list(fpr_grid), tpr_mean=_json_list(nanreduce(
            np.nanmean, np.stack([per_member[i]["roc_tpr"] for i in idx]))))
        # The OSCR curve on the same grid (NaN where a trial has no "none" row).
        entry["oscr"] = dict(fpr=_json_list(fpr_grid), ccr_mean=_json_list(nanreduce(
            np.nanmean, np.stack([per_member[i]["oscr_ccr"] for i in idx]))))
        variant_results[name] = entry
    methods = _best_variants(variants, [m["weighted_auc"] for m in per_member])
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
        methods={m: dict(variant=name, **variant_results[name],
                         class_auc=_class_auc(outputs, per_member, variants[name]["members"]),
                         grid_edge=grid_edge(variants, name))
                 for m, name in methods.items()},
        variants=variant_results,
        paper_table1={m: dict(mean=mu, max_dev=dev) for m, (mu, dev) in PAPER_TABLE1.items()},
    )


def _best_variants(variants: dict[str, dict], score: Sequence[float]) -> dict[str, str]:
    """Each method's variant of highest mean `score` over its members (the paper's alpha search).

    Strictly better only, so a tie keeps the smaller alpha (sorted first); NaN scores lose.
    """
    best: dict[str, tuple[str, float]] = {}
    for name, v in variants.items():
        finite = [x for x in (score[i] for i in v["members"]) if np.isfinite(x)]
        mean = float(np.mean(finite)) if finite else -math.inf
        if v["method"] not in best or mean > best[v["method"]][1]:
            best[v["method"]] = (name, mean)
    return {method: name for method, (name, _) in best.items()}


def _class_auc(outputs: SweepResult, per_member, idx) -> dict[str, dict]:
    """Per class (by name), its one-vs-rest AUC summarised over the members `idx`; classes that
    were never a column (unseen or absent from validation in every trial) are left out."""
    stacked = np.stack([per_member[i]["class_auc"] for i in idx])
    return {outputs.class_names[k]: summarize(stacked[:, k])
            for k in range(stacked.shape[1]) if np.isfinite(stacked[:, k]).any()}


def _json_list(a) -> list:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, np.float64)]


# ---------------------------------------------------------------------------------------------
# Beyond Table 1: alpha chosen on held-out rows, and paired comparisons with the control.


def _evaluate_on(outputs, i, rows, *, scores=None, **kw) -> dict[str, Any]:
    t = int(outputs.members[i]["trial"])
    keep = slice(None) if rows is None else rows[t]
    embedding = None if scores is None else {k: v[keep] for k, v in scores[t].items()}
    result = evaluate.evaluate_member(outputs.val_probs[i][keep], outputs.val_labels[t][keep],
                                      outputs.seen_mask[t], embedding_scores=embedding, **kw)
    loss = outputs.history.get("train_loss")
    result["final_train_loss"] = (float(loss[i, -1]) if loss is not None and loss.shape[1]
                                  else math.nan)
    return result


def held_out_selection(outputs: SweepResult, variants: dict[str, dict], rows: np.ndarray, *,
                       threshold, thresholds, fpr_grid, num_bins,
                       scores: Sequence[dict] | None = None,
                       detectors=evaluate.OUTPUT_DETECTORS
                       ) -> tuple[dict, dict[int, dict], dict[int, evaluate.PostHoc]]:
    """Each method's alpha chosen by mean weighted AUC on the selection rows (rows[t] True), and
    its metrics on the other, report rows, after the post-hoc fits of each of its members on
    the selection rows (`report.fits.fit_members`).

    Returns:
      (results["selection"] without its header, {member: metrics on the report rows} and
      {member: its post-hoc fits}, both for the chosen variants' members).
    """
    selection_auc = []
    for i, member in enumerate(tqdm(outputs.members, desc="selecting alpha", leave=False)):
        t = int(member["trial"])
        selection_auc.append(evaluate.ovr_roc(outputs.val_probs[i][rows[t]],
                                              outputs.val_labels[t][rows[t]],
                                              outputs.seen_mask[t]).weighted_auc)
    chosen = _best_variants(variants, selection_auc)
    members = [i for name in chosen.values() for i in variants[name]["members"]]
    fits = fit_members(outputs, members, rows, scores=scores, detectors=detectors)
    report_rows = ~rows
    on_report = {i: _evaluate_on(outputs, i, report_rows, threshold=threshold,
                                 thresholds=thresholds, fpr_grid=fpr_grid, num_bins=num_bins,
                                 scores=scores, posthoc=fits[i], detectors=detectors)
                 for i in members}
    methods = {}
    for method, name in chosen.items():
        v = variants[name]
        idx = v["members"]
        entry = dict(variant=name, method=method, **variant_settings(v),
                     selection_weighted_auc=summarize([selection_auc[i] for i in idx]))
        for key in SCALAR_METRICS:
            entry[key] = summarize([on_report[i][key] for i in idx])
        entry["temperature"] = summarize([fits[i].temperature for i in idx])
        entry["tuned_threshold"] = summarize([fits[i].threshold for i in idx])
        entry["best_detector"] = {d: sum(fits[i].detector == d for i in idx)
                                  for d in evaluate.DETECTORS
                                  if any(fits[i].detector == d for i in idx)}
        entry["grid_edge"] = grid_edge(variants, name)
        methods[method] = entry
    return dict(methods=methods), on_report, fits


def grid_edge(variants: dict[str, dict], name: str) -> list[dict[str, Any]]:
    """The settings at which variant `name` sits on the edge of its method's grid.

    For each setting the method reads (its own, and the swept ones every method reads) whose
    grid (the values its variants ran) has at least two values: where the chosen value is the
    smallest or the largest, unless the setting's range ends there (a softness of 0 cannot go
    lower), the grid should be extended.

    Returns:
      [dict(setting=, value=, side="smallest" | "largest", grid=[...])], possibly empty.
    """
    chosen = variants[name]
    method = chosen["method"]
    try:
        reads = registry.method(method).reads
    except registry.UnknownNameError:
        reads = tuple(variant_settings(chosen))
    reads += tuple(s.name for s in registry.settings(every_method=True)
                   if s.name in chosen and s.name not in reads)
    out = []
    for setting in reads:
        grid = sorted({v.get(setting, 0.0) for v in variants.values() if v["method"] == method})
        value = chosen.get(setting, 0.0)
        if len(grid) < 2 or value not in (grid[0], grid[-1]):
            continue
        side = "smallest" if value == grid[0] else "largest"
        try:
            limits = registry.setting(setting).range
        except registry.UnknownNameError:
            limits = None
        if limits is not None and (
                (side == "smallest" and limits.low_closed and value == limits.low)
                or (side == "largest" and limits.high_closed and value == limits.high)):
            continue
        out.append(dict(setting=setting, value=value, side=side, grid=grid))
    return out


def paired_section(outputs: SweepResult, chosen: dict[str, str], variants: dict[str, dict],
                   values: dict[int, dict], rows: np.ndarray | None, *, key, num_resamples: int,
                   threshold: float, num_bins: int,
                   posthoc: dict[int, evaluate.PostHoc] | None = None,
                   scores: Sequence[dict] | None = None,
                   detectors=evaluate.OUTPUT_DETECTORS) -> dict[str, dict]:
    """`statistics.compare_with_control` of the chosen variants, with the bootstrap over `rows`
    (None: all validation rows) unless num_resamples is 0; `posthoc`, `scores` and
    `detectors` are `statistics.paired_bootstrap`'s."""
    from embaug_jax.report import statistics

    members = {m: variants[name]["members"] for m, name in chosen.items()}
    resampled = None
    if num_resamples:
        cache: dict = {}
        resampled = {}
        for method, idx in tqdm(list(members.items()), desc="bootstrap", leave=False):
            if method == "control":
                continue
            pairs = statistics.pair_members(outputs.members, idx, members["control"])
            resampled[method] = statistics.paired_bootstrap(
                key, pairs, outputs.members, outputs.val_probs, outputs.val_labels,
                outputs.seen_mask, rows, num_resamples=num_resamples, threshold=threshold,
                num_bins=num_bins, cache=cache, posthoc=posthoc, embedding_scores=scores,
                detectors=detectors)
    per_member = [values.get(i) for i in range(len(outputs.members))]
    return statistics.compare_with_control(outputs.members, members, per_member, resampled)


# ---------------------------------------------------------------------------------------------
# A metric along each swept setting.

# What the axis tables and figure show unless told otherwise (config.report.axis_metrics).
AXIS_METRICS = ("weighted_auc", "none_accuracy")


def check_axis_metrics(metrics, name: str = "axis_metrics") -> tuple[str, ...]:
    """`metrics` as a tuple of names; ValueError unless each is one of SCALAR_METRICS (the one
    check of the value, for the config and the Python API alike)."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    bad = [m for m in metrics if m not in SCALAR_METRICS]
    if not metrics or bad:
        raise ValueError(f"{name}={metrics!r} must name one or more of {', '.join(SCALAR_METRICS)}"
                         + (f"; unknown: {', '.join(map(repr, bad))}" if bad else ""))
    return metrics


def axis_section(results: dict, metrics: Sequence[str]) -> dict[str, Any]:
    """results["axes"]: each method's `metrics` along each setting it ran several values of,
    its other settings held at its chosen variant (the held-out choice where there is one).

    Returns:
      {"metrics", "choice": "held-out" or "paper", "settings": {setting: {"values": sorted
      union over methods, "methods": {method: {"fixed": the other settings, "chosen": the
      chosen value, "variants": [variant name or None per value], metric: [summary (as
      results["variants"]) or None per value]}}}}}.
    """
    held_out = "selection" in results
    chosen = results["selection" if held_out else "methods"]
    chosen = {m: e["variant"] for m, e in (chosen["methods"] if held_out else chosen).items()}
    variants = results["variants"]
    by_method: dict[str, list[str]] = {}
    for name, entry in variants.items():
        by_method.setdefault(entry["method"], []).append(name)
    settings: dict[str, dict] = {}
    for method, names in by_method.items():
        point = entry_settings(variants[chosen[method]])
        for axis in point:
            if len({entry_settings(variants[n]).get(axis) for n in names}) < 2:
                continue
            fixed = {k: v for k, v in point.items() if k != axis}
            line = {entry_settings(variants[n])[axis]: n for n in names
                    if {k: v for k, v in entry_settings(variants[n]).items() if k != axis}
                    == fixed}
            settings.setdefault(axis, {})[method] = dict(fixed=fixed, chosen=point[axis],
                                                         line=line)
    out = {}
    for axis in (s.name for s in registry.settings()):  # the registry's order
        if axis not in settings:
            continue
        values = sorted({v for e in settings[axis].values() for v in e["line"]})
        methods = {}
        for method, e in settings[axis].items():
            names = [e["line"].get(v) for v in values]
            methods[method] = dict(fixed=e["fixed"], chosen=e["chosen"], variants=names,
                                   **{k: [variants[n][k] if n else None for n in names]
                                      for k in metrics})
        out[axis] = dict(values=values, methods=methods)
    return dict(metrics=list(metrics), choice="held-out" if held_out else "paper", settings=out)


def entry_settings(entry: dict) -> dict[str, float]:
    """The registered settings a results["variants"] entry records (`variant_settings` of its
    variant)."""
    names = {s.name for s in registry.settings()}
    return {k: v for k, v in entry.items() if k in names}
