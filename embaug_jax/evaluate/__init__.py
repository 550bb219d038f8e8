"""The evaluation stage: every metric of a classifier with a "none" category (sec. 2.5, 3.5, 4).

Each rule is written once, as a sum over rows under per-row weights (`inputs` has the
conventions every function shares): weights 1 for plain evaluation, the row counts [B, N] of
bootstrap resamples, and on device a padded block's validity mask. So the training program's
learning curves (`threshold_counts` in jnp inside its compiled evaluation), the report's
per-member evaluation (`evaluate_member`) and the paired bootstrap (`resampled_metrics`) call
the same functions with different weights.

- `threshold`: the paper's accuracy against a confidence threshold (Figures 3 and 5).
- `roc`: the one-vs-rest ROC problem, its weighted AUC (one weighted Mann-Whitney statistic,
  equal to sklearn's trapezoidal AUC) with its seen-class and "none" parts, the Figure 4 curves,
  average precision and FPR at a TPR, and "none" detection.
- `openset`: the trade-off over every threshold (the OSCR curve and its area) and the threshold
  chosen on held-out rows.
- `detectors`: "none" scores from the outputs (max probability, max-logit, energy) and from the
  embeddings (Mahalanobis, k nearest neighbours), and their detection metrics.
- `calibration`: one weighted binning (equal-width or equal-mass); ECE, the reliability diagram,
  the NLL and the Brier score.
- `posthoc`: what a member's selection rows fix: temperature and vector scaling, the threshold,
  the detector.
- `member`: `evaluate_member`, everything the report needs of one member.
- `bootstrap`: `bootstrap_counts` and `resampled_metrics`, the same metrics on resamples.
"""

from embaug_jax.evaluate.bootstrap import bootstrap_counts, resampled_metrics
from embaug_jax.evaluate.calibration import (BINNINGS, NUM_BINS, CalibrationBins, calibration,
                                             calibration_bins, expected_calibration_error,
                                             scoring_rules)
from embaug_jax.evaluate.detectors import (DETECTORS, EMBEDDING_DETECTORS, KNN_K,
                                           OUTPUT_DETECTORS, NoWithinClassSpread,
                                           detection_metrics, detector_keys,
                                           knn_scores, ledoit_wolf, mahalanobis_scores,
                                           output_scores)
from embaug_jax.evaluate.inputs import sigmoid_logits, top_seen_prediction
from embaug_jax.evaluate.member import (CALIBRATION_METRICS, CALIBRATION_SCORES,
                                        OPEN_SET_METRICS, RESAMPLED_METRICS, SCALINGS,
                                        TABLE1_METRICS, TUNED_METRICS, calibration_metrics,
                                        evaluate_member, open_set_metrics, scalar_metrics)
from embaug_jax.evaluate.openset import choose_threshold, oscr_area, oscr_curve
from embaug_jax.evaluate.posthoc import (TEMPERATURE_RANGE, VECTOR_PENALTY, PostHoc, Scaling,
                                         best_detector, fit_posthoc, fit_temperature,
                                         fit_vector_scaling)
from embaug_jax.evaluate.roc import (FPR_GRID, NONE_NAME, AucParts, OvrRoc, OvrScores,
                                     TiedGroups, auc_decomposition, auc_parts,
                                     average_precision, binary_roc, column_aucs, fpr_at_tpr,
                                     interpolate_roc, mann_whitney_auc, none_detection,
                                     none_score, ovr_roc, ovr_scores, roc_points, seen_columns,
                                     swap_classes, tied_groups)
from embaug_jax.evaluate.threshold import (COUNT_NAMES, THRESHOLDS, accuracies, check_threshold,
                                           threshold_accuracy, threshold_counts,
                                           threshold_sweep)

__all__ = [
    "AucParts", "BINNINGS", "CALIBRATION_METRICS", "CALIBRATION_SCORES", "COUNT_NAMES",
    "CalibrationBins", "DETECTORS", "EMBEDDING_DETECTORS", "FPR_GRID", "KNN_K", "NONE_NAME",
    "NUM_BINS", "NoWithinClassSpread", "OPEN_SET_METRICS", "OUTPUT_DETECTORS", "OvrRoc", "OvrScores", "PostHoc",
    "RESAMPLED_METRICS", "SCALINGS", "Scaling", "TABLE1_METRICS", "TEMPERATURE_RANGE",
    "THRESHOLDS", "TUNED_METRICS", "TiedGroups", "VECTOR_PENALTY", "accuracies",
    "auc_decomposition", "auc_parts", "average_precision", "best_detector", "binary_roc",
    "bootstrap_counts", "calibration", "calibration_bins", "calibration_metrics",
    "check_threshold", "choose_threshold", "column_aucs", "detection_metrics", "detector_keys",
    "evaluate_member", "expected_calibration_error", "fit_posthoc", "fit_temperature",
    "fit_vector_scaling", "fpr_at_tpr", "interpolate_roc", "knn_scores", "ledoit_wolf",
    "mahalanobis_scores", "mann_whitney_auc", "none_detection", "none_score",
    "open_set_metrics", "oscr_area", "oscr_curve", "output_scores", "ovr_roc", "ovr_scores",
    "resampled_metrics", "roc_points", "scalar_metrics", "scoring_rules", "seen_columns",
    "sigmoid_logits", "swap_classes", "threshold_accuracy", "threshold_counts",
    "threshold_sweep", "tied_groups", "top_seen_prediction",
]
