"""How sure a comparison with the control is: paired differences, their intervals, honest alpha.

Members that differ only in method share their trial's split, their initialisation and their
shuffles (see `embaug_jax.train.program`), so a method is compared with the control trial by trial
(and seed by seed): the paired difference removes what the split and the draw add to both.
Two 95% intervals of the mean paired difference answer two questions:

- paired t over trials (`paired_t_interval`): would another split and initialisation give the
  same difference? (Needs >= 2 trials x seeds.)
- bootstrap over validation rows within each trial (`paired_bootstrap`): how much of the
  difference is the luck of which rows were validated on? The same resample scores both members.

A difference is called distinguishable from noise when every interval that could be computed
excludes 0. Each interval has its p-value (`paired_t_p_value`, `bootstrap_p_value`), and the
larger of the two is the comparison's: it is below 5% when both intervals exclude 0. A table
of many comparisons is corrected by Holm's step-down rule (`holm`).

Honest alpha selection (`selection_rows`): the paper picks each method's alpha by the validation
AUC it then reports, which flatters the methods (the control has no alpha to pick). Splitting each
trial's validation rows into a selection part and a report part, and picking on the first,
removes that bias from the numbers reported on the second.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from scipy import stats as scipy_stats

from embaug_jax import evaluate

# Table 1's metrics compared with the control (all in evaluate.RESAMPLED_METRICS).
HEADLINE_METRICS = ("weighted_auc", "seen_auc", "none_auroc", "overall_accuracy",
                    "none_accuracy", "ece")
# Every per-member metric compared with the control: all of evaluate.RESAMPLED_METRICS but the
# "none" share of the rows, which both members of a pair share.
PAIRED_METRICS = HEADLINE_METRICS + tuple(
    k for k in evaluate.RESAMPLED_METRICS if k not in HEADLINE_METRICS and k != "none_weight")
CONFIDENCE = 0.95
# The comparisons each table of results.md makes, corrected together (`holm_families`): Table
# 1's, the three answers of the headline (seen classes, "none", calibration), threshold-free and
# tuned-threshold "none", calibration before and after post-hoc scaling, the best detectors.
FAMILIES = {
    "table1": HEADLINE_METRICS,
    "answers": ("seen_auc", "oscr_auc", "ece_ts"),
    "open_set": ("oscr_auc", "none_aupr", "seen_aupr", "none_fpr_at_95_tpr",
                 "tuned_overall_accuracy", "tuned_none_accuracy", "tuned_seen_accuracy"),
    "calibration": ("ece",) + evaluate.CALIBRATION_METRICS,
    "detectors": ("best_detector_auroc", "best_detector_aupr", "best_detector_fpr_at_95_tpr"),
}


def paired_t_interval(differences: Sequence[float], confidence: float = CONFIDENCE):
    """Mean of paired differences and its two-sided t interval (scipy.stats.t, n - 1 dof).

    Non-finite differences are dropped. Returns (mean, low, high, n); low / high are NaN with
    fewer than two differences, mean too with none.
    """
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def bootstrap_interval(resampled: np.ndarray, confidence: float = CONFIDENCE):
    """Percentile interval of the mean over trials of resampled paired differences.

    Args:
      resampled: [T, B]: trial t's paired difference on its B bootstrap resamples (trials are
        resampled independently, so resample b of each trial together is one draw of the mean).

    Returns:
      (low, high); NaN where no resample gives a finite mean.
    """
    resampled = np.asarray(resampled, np.float64)
    with np.errstate(invalid="ignore"):
        means = resampled.mean(axis=0)
    means = means[np.isfinite(means)]
    if means.size == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_t_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired t test that the mean difference is 0 (the test whose
    interval `paired_t_interval` is). Differences that are all equal give 0 if they are not 0
    and 1 if they are; NaN with fewer than two finite differences."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() != 0 else 1.0
    t = d.mean() / (sd / math.sqrt(d.size))
    return float(2 * scipy_stats.t.sf(abs(t), d.size - 1))


def bootstrap_p_value(resampled: np.ndarray, observed: float) -> float:
    """Two-sided bootstrap p-value that the mean difference is 0: 2 P(Z > |observed| / se),
    with se the standard deviation of the resampled means (the normal approximation).

    A percentile p-value (the share of resampled means beyond 0) could not go below 2 / (B + 1),
    too coarse for Holm's correction over tens of comparisons at B = 200. Resampled means that
    are all equal give 0 if the observed mean is not 0 and 1 if it is; NaN where fewer than two
    resamples give a finite mean.

    Args:
      resampled: [T, B], as `bootstrap_interval`'s.
      observed: the mean paired difference on the rows themselves.
    """
    resampled = np.asarray(resampled, np.float64)
    with np.errstate(invalid="ignore"):
        means = resampled.mean(axis=0)
    means = means[np.isfinite(means)]
    if means.size < 2 or not math.isfinite(observed):
        return math.nan
    se = means.std(ddof=1)
    if se == 0:
        return 0.0 if observed != 0 else 1.0
    return float(2 * scipy_stats.norm.sf(abs(observed) / se))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: with the m finite p-values sorted ascending, the
    i-th (from 1) becomes max over j <= i of min(1, (m - j + 1) p_(j)); NaN stays NaN.

    A comparison is distinguishable after the correction when its adjusted p-value is at most
    the level (1 - CONFIDENCE): the family-wise error of all m is then at most that level.
    """
    p = np.asarray(p_values, np.float64)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out


def check_selection_fraction(fraction, name: str = "selection_fraction") -> float:
    """`fraction` as a float; ValueError unless 0 <= fraction < 1 (the one check of the value,
    for the config and the Python API alike)."""
    value = float(fraction)
    if not 0 <= value < 1:  # NaN fails too
        raise ValueError(f"{name}={fraction} must lie in [0, 1): the share of each trial's "
                         "validation rows that choose alpha (0: choose it the paper's way only).")
    return value


def check_bootstrap_resamples(num_resamples, name: str = "bootstrap_resamples") -> int:
    """`num_resamples` as an int; ValueError unless it is a whole number >= 0 (the one check of
    the value, for the config and the Python API alike)."""
    value = int(num_resamples)
    if value != num_resamples or value < 0:
        raise ValueError(f"{name}={num_resamples} must be a whole number >= 0: the resamples of "
                         "each trial's validation rows (0: no bootstrap intervals).")
    return value


def selection_rows(key, num_trials: int, num_rows: int, fraction: float) -> np.ndarray:
    """Which validation rows of each trial select alpha (True) and which report (False).

    round(fraction * num_rows) rows per trial, drawn uniformly (trial t from fold_in(key, t)),
    so both parts keep the trial's class mix in expectation.

    Returns:
      bool [num_trials, num_rows].
    """
    fraction = float(fraction)
    if not 0 < fraction < 1:
        raise ValueError(f"selection fraction must lie in (0, 1), got {fraction}; 0 turns the "
                         "held-out selection off.")
    count = int(round(fraction * num_rows))
    if not 0 < count < num_rows:
        raise ValueError(f"selection fraction {fraction} of {num_rows} validation rows leaves one "
                         "part empty; use a fraction nearer 0.5.")
    out = np.zeros((num_trials, num_rows), bool)
    for t in range(num_trials):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, t), num_rows))
        out[t, order[:count]] = True
    return out


def pair_members(members: Sequence[dict], method_idx: Sequence[int],
                 control_idx: Sequence[int]) -> list[tuple[int, int]]:
    """(method member, control member) pairs that share trial and seed, in trial-seed order."""
    control = {(int(members[i]["trial"]), int(members[i]["seed"])): i for i in control_idx}
    pairs = []
    for i in method_idx:
        unit = (int(members[i]["trial"]), int(members[i]["seed"]))
        if unit in control:
            pairs.append((i, control[unit]))
    return sorted(pairs, key=lambda p: (int(members[p[0]]["trial"]), int(members[p[0]]["seed"])))


def paired_bootstrap(key, pairs, members, probs, labels, seen_mask, rows=None, *,
                     num_resamples: int, threshold: float, num_bins: int = evaluate.NUM_BINS,
                     cache: dict | None = None, posthoc: dict[int, Any] | None = None,
                     embedding_scores: Sequence[dict] | None = None,
                     detectors=evaluate.OUTPUT_DETECTORS) -> dict[str, np.ndarray]:
    """Resampled paired differences (method - control) of every RESAMPLED_METRICS metric.

    Trial t's validation rows (those with rows[t] True, or all) are resampled num_resamples times
    with the counts of `evaluate.bootstrap_counts(fold_in(key, t), ...)`; both members of a pair
    are scored on the same resamples, and pairs of one trial (several seeds) are averaged.

    Args:
      pairs: (method member, control member) index pairs, as `pair_members`.
      probs: [M, Nv, C]; labels: [T, Nv]; seen_mask: [T, C]; rows: bool [T, Nv] or None.
      cache: a dict reused across calls so each control member is resampled once.
      posthoc: {member: `evaluate.PostHoc`} fitted on other rows, held fixed over resamples.
      embedding_scores: per trial, {detector: score [Nv]} of the embedding detectors.
      detectors: the output detectors scored (`evaluate.resampled_metrics`').

    Returns:
      {metric: float64 [T', B]} over the T' trials that hold a pair.
    """
    cache = {} if cache is None else cache
    by_trial: dict[int, list[tuple[int, int]]] = {}
    for m, c in pairs:
        by_trial.setdefault(int(members[m]["trial"]), []).append((m, c))

    def resampled(i, t, counts):
        if i not in cache:
            keep = slice(None) if rows is None else rows[t]
            scores = ({k: v[keep] for k, v in embedding_scores[t].items()}
                      if embedding_scores is not None else None)
            cache[i] = evaluate.resampled_metrics(
                probs[i][keep], labels[t][keep], seen_mask[t], counts, threshold=threshold,
                num_bins=num_bins, posthoc=(posthoc or {}).get(i), embedding_scores=scores,
                detectors=detectors)
        return cache[i]

    out = {k: [] for k in evaluate.RESAMPLED_METRICS}
    for t in sorted(by_trial):
        num_rows = labels.shape[1] if rows is None else int(rows[t].sum())
        counts = evaluate.bootstrap_counts(jax.random.fold_in(key, t), num_rows, num_resamples)
        diffs = [{k: resampled(m, t, counts)[k] - resampled(c, t, counts)[k]
                  for k in evaluate.RESAMPLED_METRICS} for m, c in by_trial[t]]
        for k in out:
            with np.errstate(invalid="ignore"):
                out[k].append(np.mean([d[k] for d in diffs], axis=0))
    return {k: np.asarray(v) for k, v in out.items()}


def compare_with_control(members, chosen: dict[str, list[int]], values: list[dict[str, Any]],
                         resampled: dict[str, dict[str, np.ndarray]] | None,
                         confidence: float = CONFIDENCE) -> dict[str, dict]:
    """The mean paired difference of every metric of PAIRED_METRICS the members' values hold,
    with its intervals and p-values, per method.

    Args:
      chosen: {method: its reported variant's member indices}; must hold "control".
      values: per-member metric dicts (on the rows the comparison uses).
      resampled: {method: `paired_bootstrap` output} or None (no bootstrap).

    Returns:
      {method: {metric: dict(mean, n, t_low, t_high, boot_low, boot_high, t_excludes_zero,
      boot_excludes_zero, distinguishable, p_t, p_boot, p, differences)}} for every method
      but the control; p is the larger of p_t and p_boot (those that could be computed).
    """
    out = {}
    for method, idx in chosen.items():
        if method == "control":
            continue
        pairs = pair_members(members, idx, chosen["control"])
        held = [k for k in PAIRED_METRICS if all(k in values[i] for pair in pairs for i in pair)]
        entry = {}
        for k in held:
            diffs = [values[m][k] - values[c][k] for m, c in pairs]
            mean, t_low, t_high, n = paired_t_interval(diffs, confidence)
            boot_low, boot_high = (bootstrap_interval(resampled[method][k], confidence)
                                   if resampled is not None and method in resampled
                                   else (math.nan, math.nan))
            intervals = [(lo, hi) for lo, hi in ((t_low, t_high), (boot_low, boot_high))
                         if math.isfinite(lo) and math.isfinite(hi)]
            excludes = [not lo <= 0 <= hi for lo, hi in intervals]
            p_t = paired_t_p_value(diffs)
            p_boot = (bootstrap_p_value(resampled[method][k], mean)
                      if resampled is not None and method in resampled else math.nan)
            p_both = [p for p in (p_t, p_boot) if math.isfinite(p)]
            entry[k] = dict(
                mean=_finite(mean), n=n, t_low=_finite(t_low), t_high=_finite(t_high),
                boot_low=_finite(boot_low), boot_high=_finite(boot_high),
                t_excludes_zero=None if not math.isfinite(t_low) else not t_low <= 0 <= t_high,
                boot_excludes_zero=(None if not math.isfinite(boot_low)
                                    else not boot_low <= 0 <= boot_high),
                distinguishable=bool(intervals) and all(excludes),
                p_t=_finite(p_t), p_boot=_finite(p_boot),
                p=_finite(max(p_both)) if p_both else None,
                differences=[_finite(float(d)) for d in diffs])
        out[method] = entry
    return out


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None


def holm_families(paired: dict[str, dict], families: dict[str, Sequence[str]] = FAMILIES,
                  confidence: float = CONFIDENCE) -> dict[str, dict]:
    """Holm's correction over each family's comparisons (every method but the control x the
    family's metrics, those with a p-value), from `compare_with_control`'s output.

    Returns:
      {family: dict(metrics=[...], comparisons=m, level=1 - confidence,
      adjusted={method: {metric: Holm-adjusted p or None}})}.
    """
    out = {}
    for family, metrics in families.items():
        cells = [(method, k) for method, entry in paired.items() for k in metrics
                 if k in entry and entry[k]["p"] is not None]
        adjusted = holm([paired[method][k]["p"] for method, k in cells])
        table: dict[str, dict] = {method: {} for method in paired}
        for (method, k), value in zip(cells, adjusted):
            table[method][k] = _finite(value)
        out[family] = dict(metrics=list(metrics), comparisons=len(cells),
                           level=round(1 - confidence, 10), adjusted=table)
    return out
