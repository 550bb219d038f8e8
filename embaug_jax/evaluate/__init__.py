"""The evaluation stage: every metric of a classifier with a "none" category (sec. 2.5, 3.5, 4).

Each rule is written once, as a sum over rows under per-row weights (`inputs` has the
conventions every function shares): weights 1 for plain evaluation, the row counts [B, N] of
bootstrap resamples, and on device a padded block's validity mask. So the training program's
learning curves (`threshold_counts` in jnp inside its compiled evaluation), the report's
per-member evaluation (`evaluate_member`) and the paired bootstrap (`resampled_metrics`) call
the same functions with different weights.

- `threshold`: the paper's accuracy against a confidence threshold (Figures 3 and 5).
- `roc`: the one-vs-rest ROC problem, its weighted AUC (one weighted Mann-Whitney statistic,
  equal to sklearn's trapezoidal AUC) with its seen-class and "none" parts, the Figure 4 curves
  and "none" detection.
- `calibration`: one weighted binning; ECE and the reliability diagram.
- `member`: `evaluate_member`, everything the report needs of one member.
- `bootstrap`: `bootstrap_counts` and `resampled_metrics`, the same metrics on resamples.
"""

from embaug_jax.evaluate.bootstrap import bootstrap_counts, resampled_metrics
from embaug_jax.evaluate.calibration import (NUM_BINS, CalibrationBins, calibration,
                                             calibration_bins, expected_calibration_error)
from embaug_jax.evaluate.inputs import top_seen_prediction
from embaug_jax.evaluate.member import RESAMPLED_METRICS, evaluate_member, scalar_metrics
from embaug_jax.evaluate.roc import (FPR_GRID, NONE_NAME, AucParts, OvrRoc, OvrScores,
                                     TiedGroups, auc_decomposition, auc_parts, binary_roc,
                                     column_aucs, interpolate_roc, mann_whitney_auc,
                                     none_detection, none_score, ovr_roc, ovr_scores,
                                     roc_points, seen_columns, tied_groups)
from embaug_jax.evaluate.threshold import (COUNT_NAMES, THRESHOLDS, accuracies, check_threshold,
                                           threshold_accuracy, threshold_counts,
                                           threshold_sweep)

__all__ = [
    "AucParts", "COUNT_NAMES", "CalibrationBins", "FPR_GRID", "NONE_NAME", "NUM_BINS",
    "OvrRoc", "OvrScores", "RESAMPLED_METRICS", "THRESHOLDS", "TiedGroups", "accuracies",
    "auc_decomposition", "auc_parts", "binary_roc", "bootstrap_counts", "calibration",
    "calibration_bins", "check_threshold", "column_aucs", "evaluate_member",
    "expected_calibration_error", "interpolate_roc", "mann_whitney_auc", "none_detection",
    "none_score", "ovr_roc", "ovr_scores", "resampled_metrics", "roc_points", "scalar_metrics",
    "seen_columns", "threshold_accuracy", "threshold_counts", "threshold_sweep", "tied_groups",
    "top_seen_prediction",
]
