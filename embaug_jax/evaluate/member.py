"""Everything the report needs of one member's validation probabilities (`evaluate_member`), and
the scalar metrics beyond Table 1's under any weighting of the rows (`open_set_metrics`,
`calibration_metrics`), which the bootstrap calls with row counts."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import expit

from embaug_jax.evaluate.calibration import (NUM_BINS, calibration, calibration_bins,
                                             expected_calibration_error, scoring_rules)
from embaug_jax.evaluate.detectors import (DETECTORS, EMBEDDING_DETECTORS, OUTPUT_DETECTORS,
                                           detection_metrics, detector_keys, output_scores)
from embaug_jax.evaluate.inputs import check_inputs, sigmoid_logits, unit_weights
from embaug_jax.evaluate.openset import oscr_area, oscr_curve
from embaug_jax.evaluate.posthoc import PostHoc
from embaug_jax.evaluate.roc import FPR_GRID, AucParts, interpolate_roc, ovr_roc, seen_columns
from embaug_jax.evaluate.threshold import (THRESHOLDS, accuracies, threshold_accuracy,
                                           threshold_counts, threshold_sweep)

# Table 1's scalars and the accuracies at the report's threshold (`scalar_metrics`).
TABLE1_METRICS = ("weighted_auc", "seen_auc", "none_auroc", "none_weight", "seen_part",
                  "none_part", "overall_accuracy", "none_accuracy", "seen_accuracy", "ece")
# Threshold-free "none" (`open_set_metrics`): the OSCR area, AUPR with "none" as the positive
# and as the negative class, and every detector's AUROC, AUPR and FPR at 95% TPR ("msp" is
# the "none" column: none_auroc, none_aupr, none_fpr_at_95_tpr).
OPEN_SET_METRICS = ("oscr_auc", "none_aupr", "seen_aupr", "none_fpr_at_95_tpr") + tuple(
    key for name in DETECTORS if name != "msp" for key in detector_keys(name).values())
# With a member's post-hoc fits (`PostHoc`): the accuracies at the threshold chosen on its
# selection rows, and the chosen detector's figures.
TUNED_METRICS = ("tuned_overall_accuracy", "tuned_none_accuracy", "tuned_seen_accuracy",
                 "best_detector_auroc", "best_detector_aupr", "best_detector_fpr_at_95_tpr")
# Calibration of the outputs as they are, after temperature scaling (_ts) and after vector
# scaling (_vs): ECE with equal-width bins over every row ("ece", above), with equal-mass
# bins, over the seen rows alone; the NLL and the Brier score (`calibration_metrics`).
CALIBRATION_SCORES = ("ece", "ece_mass", "ece_seen", "nll", "brier")
SCALINGS = ("ts", "vs")
CALIBRATION_METRICS = CALIBRATION_SCORES[1:] + tuple(
    f"{key}_{scaling}" for scaling in SCALINGS for key in CALIBRATION_SCORES)
# The scalar metrics defined on any weighting of the rows: a member's own rows
# (`evaluate_member`) and their bootstrap resamples (`resampled_metrics`); NaN where undefined
# or not computed (no post-hoc fits, no embeddings).
RESAMPLED_METRICS = TABLE1_METRICS + OPEN_SET_METRICS + TUNED_METRICS + CALIBRATION_METRICS


def scalar_metrics(parts: AucParts, accuracy: dict, ece) -> dict:
    """TABLE1_METRICS by name, from the weighted AUC's parts, the accuracies and the ECE."""
    return dict(
        weighted_auc=parts.weighted_auc, seen_auc=parts.seen_auc, none_auroc=parts.none_auc,
        none_weight=parts.none_weight, seen_part=parts.seen_part, none_part=parts.none_part,
        overall_accuracy=accuracy["overall"], none_accuracy=accuracy["none"],
        seen_accuracy=accuracy["seen"], ece=ece)


def open_set_metrics(probs, labels, seen_mask, weights, *, posthoc: PostHoc | None = None,
                     embedding_scores: Mapping[str, np.ndarray] | None = None,
                     detectors=OUTPUT_DETECTORS, logits=None) -> dict[str, np.ndarray]:
    """OPEN_SET_METRICS and TUNED_METRICS under each weighting (float64 [B] each).

    Args:
      weights: int [B, N] (see `inputs`).
      posthoc: the member's fits on other rows; without them TUNED_METRICS are NaN.
      embedding_scores: {name: score [N]} of EMBEDDING_DETECTORS on these rows; a detector
        without scores has NaN metrics.
      detectors: the output detectors to score (a softmax head's outputs have no logits, so
        the report leaves "max_logit" and "energy" out there).
      logits: `sigmoid_logits(probs)`, when the caller has it.
    """
    seen_mask = np.asarray(seen_mask, bool)
    is_none = ~seen_mask[np.asarray(labels)]
    weights = np.asarray(weights)
    nan = np.full(weights.shape[0], np.nan)
    scores = {k: v for k, v in output_scores(probs, seen_mask, logits).items() if k in detectors}
    scores.update({k: np.asarray(v) for k, v in (embedding_scores or {}).items()
                   if k in EMBEDDING_DETECTORS})
    out = dict(oscr_auc=oscr_area(probs, labels, seen_mask, weights))
    found = {name: detection_metrics(is_none, score, weights, seen_aupr=name == "msp")
             for name, score in scores.items()}
    msp = found.get("msp")
    out.update(seen_aupr=msp["aupr_seen"] if msp else nan)
    for name in DETECTORS:
        keys = detector_keys(name)
        for metric, key in keys.items():
            if name == "msp" and metric == "auroc":
                continue  # none_auroc is Table 1's "none" column (`scalar_metrics`): the same
            out[key] = found[name][metric] if name in found else nan
    if posthoc is None:
        out.update({key: nan for key in TUNED_METRICS})
        return out
    tuned = accuracies(threshold_counts(np.asarray(probs), np.asarray(labels), seen_mask,
                                        posthoc.threshold, weights))
    out.update({f"tuned_{k}_accuracy": np.asarray(v, np.float64) for k, v in tuned.items()})
    best = found.get(posthoc.detector)
    for metric in ("auroc", "aupr", "fpr_at_95_tpr"):
        out[f"best_detector_{metric}"] = best[metric] if best else nan
    return out


def _calibration_scores(probs, logits, labels, seen_mask, weights, num_bins) -> dict:
    """CALIBRATION_SCORES of one state of the outputs (probabilities with their logits)."""
    is_seen = np.asarray(seen_mask, bool)[np.asarray(labels)]
    nll, brier = scoring_rules(logits, labels, seen_mask, weights)

    def ece(weights, binning="width"):
        return expected_calibration_error(calibration_bins(probs, labels, seen_mask, weights,
                                                           num_bins, binning=binning))

    return dict(ece=ece(weights), ece_mass=ece(weights, "mass"),
                ece_seen=ece(weights * is_seen[None, :]), nll=nll, brier=brier)


def calibration_metrics(probs, labels, seen_mask, weights, *, num_bins=NUM_BINS,
                        posthoc: PostHoc | None = None, logits=None) -> dict[str, np.ndarray]:
    """CALIBRATION_METRICS and "ece" (Table 1's, the outputs' as they are) under each weighting
    (float64 [B] each): the outputs as they are and, with the member's post-hoc fits, after
    temperature and after vector scaling (NaN without fits)."""
    logits = sigmoid_logits(probs) if logits is None else logits
    weights = np.asarray(weights)
    out = _calibration_scores(np.asarray(probs), logits, labels, seen_mask, weights, num_bins)
    for scaling in SCALINGS:
        if posthoc is None:
            out.update({f"{k}_{scaling}": np.full(weights.shape[0], np.nan)
                        for k in CALIBRATION_SCORES})
            continue
        scaled = (posthoc.temperature_scaling if scaling == "ts" else posthoc.vector).logits(
            logits)
        state = _calibration_scores(expit(scaled), scaled, labels, seen_mask, weights,
                                    num_bins)
        out.update({f"{k}_{scaling}": v for k, v in state.items()})
    return out


@jax.jit
def _accuracy_and_sweep(probs, labels, seen_mask, threshold, thresholds):
    return (threshold_accuracy(probs, labels, seen_mask, threshold),
            threshold_sweep(probs, labels, seen_mask, thresholds))


def evaluate_member(probs, labels, seen_mask, *, threshold, thresholds=THRESHOLDS,
                    fpr_grid=FPR_GRID, num_bins=NUM_BINS, posthoc: PostHoc | None = None,
                    embedding_scores: Mapping[str, np.ndarray] | None = None,
                    detectors=OUTPUT_DETECTORS) -> dict:
    """Every metric of one member's validation probabilities, every row once.

    The scalars of results.json (RESAMPLED_METRICS: the weighted AUC with its parts, see
    `AucParts`, "none_auroc" being the "none" column's AUC; the threshold-free "none" metrics
    and detectors; calibration; with `posthoc`, the tuned-threshold accuracies and the scaled
    outputs' calibration), the per-class AUCs ([C] by class id) and the curves the figures draw
    (threshold sweep, mean ROC, OSCR, calibration bins). The accuracies at `threshold` are
    float32, as the training program computes its learning curves: the last curve point equals
    the final accuracy. `posthoc`, `embedding_scores` and `detectors` are `open_set_metrics`'.
    """
    check_inputs(probs, labels, seen_mask, where="evaluate_member")
    accuracy, sweep = jax.device_get(_accuracy_and_sweep(
        probs, labels, seen_mask, jnp.float32(threshold), np.asarray(thresholds, np.float32)))
    roc = ovr_roc(probs, labels, seen_mask, fpr_grid=fpr_grid)
    calib = calibration(probs, labels, seen_mask, num_bins=num_bins)
    # Per class id (NaN where the class is no column: unseen, or absent from validation), so
    # trials whose seen classes differ line up class by class.
    columns = seen_columns(labels, seen_mask)
    class_auc = np.full(np.shape(probs)[1], np.nan)
    class_auc[columns] = roc.class_auc[:columns.size]
    logits = sigmoid_logits(probs)
    ones = unit_weights(np.shape(labels)[0])
    further = open_set_metrics(probs, labels, seen_mask, ones, posthoc=posthoc,
                               embedding_scores=embedding_scores, detectors=detectors,
                               logits=logits)
    further.update(calibration_metrics(probs, labels, seen_mask, ones, num_bins=num_bins,
                                       posthoc=posthoc, logits=logits))
    del further["ece"]  # Table 1's, computed with the bins the figures draw
    oscr_fpr, oscr_ccr = oscr_curve(probs, labels, seen_mask)
    return dict(
        **scalar_metrics(roc.parts, {k: float(v) for k, v in accuracy.items()}, calib["ece"]),
        **{k: float(v[0]) for k, v in further.items()},
        sweep_overall=np.asarray(sweep["overall"], np.float64),
        sweep_none=np.asarray(sweep["none"], np.float64),
        roc_tpr=roc.tpr,
        oscr_ccr=interpolate_roc(fpr_grid, oscr_fpr, oscr_ccr),
        class_auc=class_auc,
        calibration=calib,
    )
