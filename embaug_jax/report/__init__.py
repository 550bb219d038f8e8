"""From a finished sweep to the paper's Table 1 and Figures 3-6, written into the workdir.

`write_report(workdir, outputs)` evaluates every member (`embaug_jax.metrics`), groups members
into variants (method, alpha, softness) over trials and seeds, picks each method's best alpha by
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
    SweepOutputs,
    _build_results,
    evaluate_members,
    group_variants,
    summarize,
)
from embaug_jax.report.tables import _results_markdown, format_table
from embaug_jax.util import write_json_atomic, write_text_atomic

__all__ = ["FIGURES", "SweepOutputs", "evaluate_members", "format_table", "group_variants",
           "summarize", "write_report"]


def write_report(workdir: str | os.PathLike, outputs: SweepOutputs, *,
                 threshold: float = metrics.DEFAULT_THRESHOLD, thresholds=None,
                 title: str | None = None, num_bins: int = 15) -> dict:
    """Evaluates a sweep and writes results.json, results.md and the figures into `workdir`.

    Args:
      workdir: output directory (created if missing).
      outputs: the sweep's `SweepOutputs`.
      threshold: confidence threshold of the accuracies in the tables (paper: 0.6).
      thresholds: Figure 3's sweep (default 0.05, 0.10, ..., 0.95).
      title: heading of results.md.
      num_bins: calibration bins.

    Returns:
      The results dict, as written to results.json.
    """
    if not isinstance(outputs, SweepOutputs):
        raise ValueError(f"write_report: outputs must be a SweepOutputs, got {type(outputs)}.")
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

    per_member = evaluate_members(outputs, threshold=threshold, thresholds=thresholds,
                                  fpr_grid=fpr_grid, num_bins=num_bins)
    variants = group_variants(outputs.members)
    results = _build_results(outputs, per_member, variants, threshold, thresholds, fpr_grid)

    # Results first: a full disk or a plotting failure must not lose the tables, and a rerun
    # (which resumes the finished checkpoints without training) redraws the figures.
    plots = [(FIGURES[0], _fig3_threshold_sweep, (results, variants, per_member)),
             (FIGURES[1], _fig4_roc, (results, variants, per_member, fpr_grid))]
    if outputs.eval_epochs.size:
        plots.append((FIGURES[2], _fig5_training_curves, (results, variants, outputs)))
        sweeps = _softness_sweeps(results)
        if sweeps:
            plots.append((FIGURES[3], _fig6_softness, (results, variants, outputs, sweeps)))
    plots.append((FIGURES[4], _reliability, (results, variants, per_member)))
    results["figures"] = [name for name, _, _ in plots]

    write_json_atomic(workdir / "results.json", results)
    write_text_atomic(workdir / "results.md", _results_markdown(results, title))
    for name, draw, args in plots:
        draw(workdir / name, *args)
    return results
