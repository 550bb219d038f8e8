"""From a finished sweep to the paper's Table 1 and Figures 3-6, written into the workdir.

`write_report(workdir, result)` evaluates every member of a finished sweep (`result`:
`train.engine.run_sweep`'s return) with `embaug_jax.metrics`, groups members into variants (method, alpha, softness) over trials and seeds, picks each method's best alpha by
mean weighted AUC (as the paper's grid search did), and writes atomically:

- `results.json`: `results["methods"][NAME]` (the chosen variant) and `results["variants"]`
  (every variant, i.e. the alpha grid), each metric as {mean, std, max_dev, min, max, n, values}.
- `results.md`: the Table-1 analogue beside the paper's own numbers, "none" detection and
  calibration, and the alpha-grid table.
- `fig3_threshold_sweep.png`, `fig4_roc.png`, `fig5_training_curves.png`, `fig6_softness.png`
  (only when a soft method ran with >= 2 softness values) and `reliability.png`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embaug_jax import metrics
from embaug_jax.report.figures import (
    FIGURES,
    _fig3_threshold_sweep,
    _fig4_roc,
    _fig5_training_curves,
    _fig6_softness,
    _reliability,
    _softness_sweeps,
)
from embaug_jax.report.results import (
    _build_results,
    evaluate_members,
    group_variants,
    summarize,
)
from embaug_jax.report.tables import _results_markdown, format_table
from embaug_jax.util import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from embaug_jax.train.engine import SweepResult

__all__ = ["FIGURES", "evaluate_members", "format_table", "group_variants",
           "summarize", "write_report"]


def write_report(workdir: str | os.PathLike, result: SweepResult, *,
                 threshold: float | None = None, thresholds=None,
                 title: str | None = None, num_bins: int = 15) -> dict:
    """Evaluates a sweep and writes results.json, results.md and the figures into `workdir`.

    Args:
      workdir: output directory (created if missing).
      result: the sweep's `SweepResult` (`run_sweep`'s return), finished.
      threshold: confidence threshold of the accuracies in the tables (default: the one the
        sweep trained with, `result.threshold`).
      thresholds: Figure 3's sweep (default 0.05, 0.10, ..., 0.95).
      title: heading of results.md.
      num_bins: calibration bins.

    Returns:
      The results dict, as written to results.json.
    """
    from embaug_jax.train.engine import SweepResult

    if not isinstance(result, SweepResult):
        raise ValueError(f"write_report: result must be a SweepResult (run_sweep's return), got "
                         f"{type(result).__name__}.")
    if not result.finished:
        raise ValueError(f"write_report: the sweep stopped at epoch {result.epochs_done} of "
                         f"{result.eval_epochs[-1]}, so it has no final probabilities; run it "
                         "to the end (rerunning resumes).")
    threshold = result.threshold if threshold is None else threshold
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

    per_member = evaluate_members(result, threshold=threshold, thresholds=thresholds,
                                  fpr_grid=fpr_grid, num_bins=num_bins)
    variants = group_variants(result.members)
    results = _build_results(result, per_member, variants, threshold, thresholds, fpr_grid)

    figures = []
    _fig3_threshold_sweep(workdir / FIGURES[0], results, variants, per_member)
    _fig4_roc(workdir / FIGURES[1], results, variants, per_member, fpr_grid)
    figures += FIGURES[:2]
    if result.eval_epochs.size:
        _fig5_training_curves(workdir / FIGURES[2], results, variants, result)
        figures.append(FIGURES[2])
        sweeps = _softness_sweeps(results)
        if sweeps:
            _fig6_softness(workdir / FIGURES[3], results, variants, result, sweeps)
            figures.append(FIGURES[3])
    _reliability(workdir / FIGURES[4], results, variants, per_member)
    figures.append(FIGURES[4])
    results["figures"] = list(figures)

    write_json_atomic(workdir / "results.json", results)
    write_text_atomic(workdir / "results.md", _results_markdown(results, title))
    return results
