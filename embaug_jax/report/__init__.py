"""From a finished sweep to the paper's Table 1 and Figures 3-6, written into the workdir.

`write_report(workdir, result, **config.report)` evaluates every member of a finished sweep
(`result`: `train.driver.run_sweep`'s `SweepResult`, or `load_predictions(workdir)`) with
`embaug_jax.evaluate`, groups members into variants (method and settings) over trials and seeds,
picks each method's best alpha by mean weighted AUC (as the paper's grid search did), and
writes atomically (each file where `embaug_jax.workdir.Workdir` puts it):

- `predictions.npz`: every member's final validation probabilities with labels, splits and
  learning curves (`load_predictions` reads it back: re-analysis needs no checkpoint).
- `results.json`: `results["methods"][NAME]` (the chosen variant, with its weighted AUC split
  into seen-class and "none" parts and its per-class AUCs), `results["variants"]` (every variant,
  i.e. the alpha grid), each metric as {mean, std, max_dev, min, max, n, values};
  `results["selection"]` (alpha chosen on a selection part of the validation rows, reported on
  the rest, after each member's post-hoc fits there: temperature and vector scaling, its own
  threshold, its best "none" detector; see `report.fits`), `results["paired"]` (each method
  minus the control, trial by trial, with paired-t and bootstrap intervals, p-values and Holm's
  correction per table; see `report.statistics`) and `results["axes"]` (chosen metrics along
  each setting a method ran several values of: alpha, a weight decay grid, ...). Beyond
  Table 1's metrics: the threshold-free "none" metrics (OSCR area, AUPR both ways), the "none"
  detectors (from the outputs, and from the embeddings when the report is given the dataset),
  calibration (ECE with equal-width and equal-mass bins and over the seen rows, NLL, Brier
  score) before and after post-hoc scaling.
- `results.md`: all of that as tables and plain sentences, beside the paper's own numbers,
  headed by the answers: does each method beat the control once the control is calibrated and
  thresholded as well as it can be, on the seen classes, on "none" and in calibration?
- the figures (`embaug_jax.workdir.FIGURES`): Figures 3-6 (Figure 6 only when a soft method
  ran with >= 2 softness values), the reliability diagram, the AUC decomposition, the OSCR
  curves (when there are "none" rows) and the metrics along each swept setting (when a method
  ran several values of one).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import jax
import numpy as np

from embaug_jax import evaluate
from embaug_jax.report import statistics
from embaug_jax.report.figures import plan_figures
from embaug_jax.report.fits import embedding_scores, output_detectors
from embaug_jax.report.results import (
    AXIS_METRICS,
    axis_section,
    build_results,
    check_axis_metrics,
    evaluate_members,
    group_variants,
    held_out_selection,
    load_predictions,
    paired_section,
    save_predictions,
    summarize,
)
from embaug_jax.report.tables import format_summary, format_table, results_markdown
from embaug_jax.util import write_json_atomic, write_text_atomic
from embaug_jax.workdir import Workdir

if TYPE_CHECKING:
    from embaug_jax.dataset import EmbeddingDataset
    from embaug_jax.train.result import SweepResult

__all__ = ["evaluate_members", "format_summary", "format_table", "group_variants",
           "load_predictions", "save_predictions", "summarize", "write_report"]


def write_report(workdir: str | os.PathLike, result: SweepResult, *,
                 selection_fraction: float, bootstrap_resamples: int, seed: int,
                 threshold: float | None = None, thresholds=None,
                 title: str | None = None, num_bins: int = evaluate.NUM_BINS,
                 dataset: EmbeddingDataset | None = None, head: str = "sigmoid",
                 axis_metrics=AXIS_METRICS) -> dict:
    """Evaluates a sweep and writes predictions.npz, results.json, results.md and the figures.

    The statistics' settings are the config's `report` section, so from a notebook
    `write_report(workdir, result, **config.report)`, or with values of one's own:
    `write_report(workdir, result, selection_fraction=0, bootstrap_resamples=0, seed=0)` keeps
    only the paper's procedure.

    Args:
      workdir: output directory (created if missing), a path or a `Workdir`.
      result: the sweep's `SweepResult` (`run_sweep`'s return), finished.
      selection_fraction: share of each trial's validation rows on which alpha is chosen for
        results["selection"], the rest reporting; 0 keeps only the paper's procedure.
      bootstrap_resamples: resamples of the validation rows per trial for the paired bootstrap
        intervals (0: paired t only).
      seed: seeds the selection split and the bootstrap.
      threshold: confidence threshold of the accuracies in the tables (default: the one the
        sweep trained with, `result.threshold`).
      thresholds: Figure 3's sweep (default 0.05, 0.10, ..., 0.95).
      title: heading of results.md.
      num_bins: calibration bins.
      dataset: the embedding dataset the sweep trained on (`load_embeddings(config.data.path)`),
        for the distance detectors (Mahalanobis, k nearest neighbours); None leaves them out.
      head: the MLP's output (config.model.head): "sigmoid" outputs invert to their logits
        (max-logit, energy, post-hoc scaling); "softmax" ones do not, so max-logit and energy
        are left out and the scalings act on the outputs' log-odds.
      axis_metrics: the metrics (names of `report.results.SCALAR_METRICS`) that
        results["axes"], its tables and its figure show along each swept setting.

    Returns:
      The results dict, as written to results.json.
    """
    from embaug_jax.train.result import SweepResult

    if not isinstance(result, SweepResult):
        raise ValueError(f"write_report: result must be a SweepResult (run_sweep's return or "
                         f"load_predictions'), got {type(result).__name__}.")
    if not result.finished:
        raise ValueError(f"write_report: the sweep stopped at epoch {result.epochs_done} of "
                         f"{result.eval_epochs[-1]}, so it has no final probabilities; run it "
                         "to the end (rerunning resumes).")
    threshold = result.threshold if threshold is None else threshold
    if threshold is None:
        raise ValueError("write_report: the sweep records no threshold (its predictions.npz "
                         "predates it); pass threshold=config.threshold.")
    threshold = evaluate.check_threshold(threshold, "write_report: threshold")
    thresholds = np.asarray(evaluate.THRESHOLDS if thresholds is None else thresholds,
                            np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.all(np.isfinite(thresholds)):
        raise ValueError(f"write_report: thresholds must be a non-empty 1-D array of numbers, "
                         f"got {thresholds!r}.")
    detectors = output_detectors(head)
    selection_fraction = statistics.check_selection_fraction(
        selection_fraction, "write_report: selection_fraction")
    bootstrap_resamples = statistics.check_bootstrap_resamples(
        bootstrap_resamples, "write_report: bootstrap_resamples")
    axis_metrics = check_axis_metrics(axis_metrics, "write_report: axis_metrics")
    workdir = Workdir(workdir)
    workdir.path.mkdir(parents=True, exist_ok=True)
    fpr_grid = evaluate.FPR_GRID
    # First, so that any later analysis reads these instead of restoring a checkpoint.
    save_predictions(workdir.predictions, result)

    scores = embedding_scores(result, dataset) if dataset is not None else None
    evaluation = dict(threshold=threshold, thresholds=thresholds, fpr_grid=fpr_grid,
                      num_bins=num_bins, scores=scores, detectors=detectors)
    per_member = evaluate_members(result, **evaluation)
    variants = group_variants(result.members)
    results = build_results(result, per_member, variants, threshold, thresholds, fpr_grid)
    results["detectors"] = dict(
        head=head, output=list(detectors),
        embedding=list(evaluate.EMBEDDING_DETECTORS) if scores is not None else [],
        knn_k=evaluate.KNN_K)

    key = jax.random.key(int(seed))
    chosen = {m: e["variant"] for m, e in results["methods"].items()}
    values, rows, fits = dict(enumerate(per_member)), None, None
    if selection_fraction:
        selection = statistics.selection_rows(jax.random.fold_in(key, 0), *result.val_labels.shape,
                                              selection_fraction)
        held_out, values, fits = held_out_selection(result, variants, selection, **evaluation)
        results["selection"] = dict(fraction=float(selection_fraction), seed=int(seed),
                                    num_selection_rows=int(selection[0].sum()),
                                    num_report_rows=int((~selection[0]).sum()), **held_out)
        chosen = {m: e["variant"] for m, e in held_out["methods"].items()}
        rows = ~selection
    if "control" in chosen and len(chosen) > 1:
        results["paired"] = dict(
            reference="control", rows="report" if rows is not None else "all",
            confidence=statistics.CONFIDENCE, bootstrap_resamples=int(bootstrap_resamples),
            methods=paired_section(result, chosen, variants, values, rows,
                                   key=jax.random.fold_in(key, 1),
                                   num_resamples=int(bootstrap_resamples),
                                   threshold=float(threshold), num_bins=num_bins,
                                   posthoc=fits, scores=scores, detectors=detectors))
        results["paired"]["families"] = statistics.holm_families(results["paired"]["methods"])

    results["axes"] = axis_section(results, axis_metrics)

    # Results first: a full disk or a plotting failure must not lose the tables, and a rerun
    # (which re-reports from the saved predictions without training) redraws the figures.
    figures = plan_figures(results, variants, per_member, result, fpr_grid)
    results["figures"] = [workdir.figure(name).name for name in figures]

    write_json_atomic(workdir.results_json, results)
    write_text_atomic(workdir.results_md, results_markdown(results, title))
    for name, draw in figures.items():
        draw(workdir.figure(name))
    return results
