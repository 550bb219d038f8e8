"""Results of a sweep: members grouped into variants, summarised over trials, best alpha per method.

`build_results(outputs)` turns the sweep's per-member evaluations into the dict written to
`results.json`: `results["methods"][NAME]` (the chosen variant) and `results["variants"]` (every
variant, i.e. the alpha grid), each metric as {mean, std, max_dev, min, max, n, values}.
"""

import dataclasses
import math
import warnings
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from embaug_jax import metrics

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
SCALAR_METRICS = ("weighted_auc", "seen_auc", "none_weight", "seen_part", "none_part",
                  "overall_accuracy", "none_accuracy", "seen_accuracy", "none_auroc", "none_aupr",
                  "none_fpr_at_95_tpr", "ece", "final_train_loss")


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
      val_idx, train_idx: optional int [T, Nv] / [T, n_train], the dataset rows of each trial's
        validation and training split (saved with the predictions, so an analysis can go back to
        the embeddings).
    """

    members: list[dict]
    eval_epochs: np.ndarray
    history: dict[str, np.ndarray]
    val_probs: np.ndarray
    val_labels: np.ndarray
    seen_mask: np.ndarray
    class_names: list[str]
    val_idx: np.ndarray | None = None
    train_idx: np.ndarray | None = None

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
        for name, shape in (("val_idx", (t, nv)), ("train_idx", None)):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            setattr(self, name, value)
            if value.ndim != 2 or value.shape[0] != t or (shape and value.shape != shape):
                raise ValueError(f"SweepOutputs.{name} must be [T, rows] with T = {t}"
                                 + (f" and rows = {nv}" if shape else "")
                                 + f", got shape {value.shape}.")
        e = self.eval_epochs.shape[0]
        for name, values in self.history.items():
            if values.shape != (m, e):
                raise ValueError(f"SweepOutputs.history[{name!r}] must be [M, E] = [{m}, {e}], "
                                 f"got shape {values.shape}.")


PREDICTIONS = "predictions.npz"


def save_predictions(path, outputs: SweepOutputs) -> None:
    """Writes a sweep's outputs (final validation probabilities, labels, splits, members,
    learning curves) as one compressed npz, atomically; `load_predictions` reads it back."""
    import json

    from embaug_jax.util import atomic_path

    arrays = dict(val_probs=outputs.val_probs, val_labels=outputs.val_labels,
                  seen_mask=outputs.seen_mask, eval_epochs=outputs.eval_epochs,
                  class_names=np.asarray(outputs.class_names, dtype=np.str_),
                  members=np.asarray(json.dumps(outputs.members, default=_json_scalar)))
    arrays.update({f"history/{k}": v for k, v in outputs.history.items()})
    for name in ("val_idx", "train_idx"):
        if getattr(outputs, name) is not None:
            arrays[name] = getattr(outputs, name)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def _json_scalar(x):
    """numpy scalars (a member's alpha as np.float32, say) as plain JSON numbers."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def load_predictions(path) -> SweepOutputs:
    """A sweep's `SweepOutputs` from the predictions.npz its run wrote (a workdir or the file):
    re-report or analyse a finished sweep without restoring a checkpoint."""
    import json
    from pathlib import Path

    path = Path(path)
    if path.suffix != ".npz":  # a workdir
        path = path / PREDICTIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: a finished `embaug train` run writes it "
                                f"beside results.json; rerun the sweep's command to make it.")
    with np.load(path, allow_pickle=False) as z:
        history = {k[len("history/"):]: z[k] for k in z.files if k.startswith("history/")}
        return SweepOutputs(
            members=json.loads(str(z["members"])), eval_epochs=z["eval_epochs"],
            history=history, val_probs=z["val_probs"], val_labels=z["val_labels"],
            seen_mask=z["seen_mask"], class_names=[str(c) for c in z["class_names"]],
            val_idx=z["val_idx"] if "val_idx" in z.files else None,
            train_idx=z["train_idx"] if "train_idx" in z.files else None)


def evaluate_members(outputs: SweepOutputs, *, threshold=metrics.DEFAULT_THRESHOLD,
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
                         class_auc=_class_auc(outputs, per_member, variants[name]["members"]))
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


def _class_auc(outputs: SweepOutputs, per_member, idx) -> dict[str, dict]:
    """Per class (by name), its one-vs-rest AUC summarised over the members `idx`; classes that
    were never a column (unseen or absent from validation in every trial) are left out."""
    stacked = np.stack([per_member[i]["class_auc"] for i in idx])
    return {outputs.class_names[k]: summarize(stacked[:, k])
            for k in range(stacked.shape[1]) if np.isfinite(stacked[:, k]).any()}


def _json_list(a) -> list:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, np.float64)]




# ---------------------------------------------------------------------------------------------
# Beyond Table 1: alpha chosen on held-out rows, and paired comparisons with the control.


def _evaluate_on(outputs, i, rows, **kw) -> dict[str, Any]:
    t = int(outputs.members[i]["trial"])
    keep = slice(None) if rows is None else rows[t]
    result = metrics.evaluate_member(outputs.val_probs[i][keep], outputs.val_labels[t][keep],
                                     outputs.seen_mask[t], **kw)
    loss = outputs.history.get("train_loss")
    result["final_train_loss"] = (float(loss[i, -1]) if loss is not None and loss.shape[1]
                                  else math.nan)
    return result


def held_out_selection(outputs: SweepOutputs, variants: dict[str, dict], rows: np.ndarray, *,
                       threshold, thresholds, fpr_grid, num_bins) -> tuple[dict, dict[int, dict]]:
    """Each method's alpha chosen by mean weighted AUC on the selection rows (rows[t] True), and
    its metrics on the other, report rows.

    Returns:
      (results["selection"] without its header, {member: metrics on the report rows} for the
      chosen variants' members).
    """
    selection_auc = []
    for i, member in enumerate(tqdm(outputs.members, desc="selecting alpha", leave=False)):
        t = int(member["trial"])
        selection_auc.append(metrics.ovr_roc(outputs.val_probs[i][rows[t]],
                                             outputs.val_labels[t][rows[t]],
                                             outputs.seen_mask[t]).weighted_auc)
    chosen = _best_variants(variants, selection_auc)
    report_rows = ~rows
    on_report = {i: _evaluate_on(outputs, i, report_rows, threshold=threshold,
                                 thresholds=thresholds, fpr_grid=fpr_grid, num_bins=num_bins)
                 for name in chosen.values() for i in variants[name]["members"]}
    methods = {}
    for method, name in chosen.items():
        v = variants[name]
        entry = dict(variant=name, method=method, alpha=v["alpha"], softness=v["softness"],
                     selection_weighted_auc=summarize([selection_auc[i] for i in v["members"]]))
        for key in SCALAR_METRICS:
            entry[key] = summarize([on_report[i][key] for i in v["members"]])
        methods[method] = entry
    return dict(methods=methods), on_report


def paired_section(outputs: SweepOutputs, chosen: dict[str, str], variants: dict[str, dict],
                   values: dict[int, dict], rows: np.ndarray | None, *, key, num_resamples: int,
                   threshold: float, num_bins: int) -> dict[str, dict]:
    """`statistics.compare_with_control` of the chosen variants, with the bootstrap over `rows`
    (None: all validation rows) unless num_resamples is 0."""
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
                num_bins=num_bins, cache=cache)
    per_member = [values.get(i) for i in range(len(outputs.members))]
    return statistics.compare_with_control(outputs.members, members, per_member, resampled)
