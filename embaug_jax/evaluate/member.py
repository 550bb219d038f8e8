"""Everything the report needs of one member's validation probabilities: `evaluate_member`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax.evaluate.calibration import NUM_BINS, calibration
from embaug_jax.evaluate.inputs import check_inputs
from embaug_jax.evaluate.roc import FPR_GRID, AucParts, none_detection, ovr_roc, seen_columns
from embaug_jax.evaluate.threshold import THRESHOLDS, threshold_accuracy, threshold_sweep

# The scalar metrics defined on any weighting of the rows: a member's own rows
# (`evaluate_member`) and their bootstrap resamples (`resampled_metrics`).
RESAMPLED_METRICS = ("weighted_auc", "seen_auc", "none_auroc", "none_weight", "seen_part",
                     "none_part", "overall_accuracy", "none_accuracy", "seen_accuracy", "ece")


def scalar_metrics(parts: AucParts, accuracy: dict, ece) -> dict:
    """RESAMPLED_METRICS by name, from the weighted AUC's parts, the accuracies and the ECE."""
    return dict(
        weighted_auc=parts.weighted_auc, seen_auc=parts.seen_auc, none_auroc=parts.none_auc,
        none_weight=parts.none_weight, seen_part=parts.seen_part, none_part=parts.none_part,
        overall_accuracy=accuracy["overall"], none_accuracy=accuracy["none"],
        seen_accuracy=accuracy["seen"], ece=ece)


@jax.jit
def _accuracy_and_sweep(probs, labels, seen_mask, threshold, thresholds):
    return (threshold_accuracy(probs, labels, seen_mask, threshold),
            threshold_sweep(probs, labels, seen_mask, thresholds))


def evaluate_member(probs, labels, seen_mask, *, threshold, thresholds=THRESHOLDS,
                    fpr_grid=FPR_GRID, num_bins=NUM_BINS) -> dict:
    """Every metric of one member's validation probabilities, every row once.

    The scalars of results.json (RESAMPLED_METRICS: the weighted AUC with its parts, see
    `AucParts`, "none_auroc" being the "none" column's AUC; plus "none" detection's AUPR and FPR
    at 95% TPR), the per-class AUCs ([C] by class id) and the curves the figures draw
    (threshold sweep, mean ROC, calibration bins). The accuracies are float32, as the training
    program computes its learning curves: the last curve point equals the final accuracy.
    """
    check_inputs(probs, labels, seen_mask, where="evaluate_member")
    accuracy, sweep = jax.device_get(_accuracy_and_sweep(
        probs, labels, seen_mask, jnp.float32(threshold), np.asarray(thresholds, np.float32)))
    roc = ovr_roc(probs, labels, seen_mask, fpr_grid=fpr_grid)
    none_det = none_detection(probs, labels, seen_mask)
    calib = calibration(probs, labels, seen_mask, num_bins=num_bins)
    # Per class id (NaN where the class is no column: unseen, or absent from validation), so
    # trials whose seen classes differ line up class by class.
    columns = seen_columns(labels, seen_mask)
    class_auc = np.full(np.shape(probs)[1], np.nan)
    class_auc[columns] = roc.class_auc[:columns.size]
    return dict(
        **scalar_metrics(roc.parts, {k: float(v) for k, v in accuracy.items()}, calib["ece"]),
        none_aupr=none_det["aupr"],
        none_fpr_at_95_tpr=none_det["fpr_at_95_tpr"],
        sweep_overall=np.asarray(sweep["overall"], np.float64),
        sweep_none=np.asarray(sweep["none"], np.float64),
        roc_tpr=roc.tpr,
        class_auc=class_auc,
        calibration=calib,
    )
