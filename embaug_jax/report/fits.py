"""What the report adds to a sweep's probabilities before it scores them: the embeddings' "none"
scores of every trial (`embedding_scores`, from the dataset the sweep trained on) and each
member's post-hoc fits on its selection rows (`fit_members`: temperature and vector scaling, a
threshold, a detector), which its report rows are then scored with.

Data flows one way: the report reads the dataset (its embeddings and labels, at the rows the
sweep's predictions.npz records in train_idx / val_idx) and nothing flows back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from absl import logging
from tqdm.auto import tqdm

from embaug_jax import evaluate

if TYPE_CHECKING:
    from embaug_jax.dataset import EmbeddingDataset
    from embaug_jax.train.result import SweepResult

HEADS = ("sigmoid", "softmax")


def output_detectors(head: str) -> tuple[str, ...]:
    """The output detectors a head's stored probabilities support: a sigmoid's invert to its
    logits; a softmax's fix the logits only up to a constant per row, so max-logit and energy
    are not defined there."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}: choose one of {HEADS} (config.model.head).")
    return evaluate.OUTPUT_DETECTORS if head == "sigmoid" else ("msp",)


def embedding_scores(result: SweepResult, dataset: EmbeddingDataset
                     ) -> list[dict[str, np.ndarray]] | None:
    """Per trial, {detector: score [Nv]} of evaluate.EMBEDDING_DETECTORS on the trial's
    validation rows, measured against its training rows' embeddings; None, with a warning,
    where a trial's training rows do not vary within any class (no covariance to measure a
    Mahalanobis distance with): the report then goes without the embedding detectors.

    Raises:
      ValueError: the sweep records no splits (its predictions.npz predates them), or the
        dataset is not the one it trained on (sizes or labels differ at the recorded rows).
    """
    if result.train_idx is None or result.val_idx is None:
        raise ValueError("the distance detectors need each trial's rows (train_idx, val_idx), "
                         "which this sweep's predictions do not record; rerun the sweep, or "
                         "report without the dataset.")
    labels = np.asarray(dataset.labels)
    last = max(int(result.train_idx.max()), int(result.val_idx.max()))
    if last >= len(labels) or any(
            not np.array_equal(labels[result.val_idx[t]], result.val_labels[t])
            for t in range(result.val_labels.shape[0])):
        raise ValueError(f"the dataset ({len(labels)} rows) is not the one this sweep trained "
                         "on: its labels differ at the validation rows the sweep recorded. "
                         "Pass the dataset at the run's config.data.path.")
    out = []
    for t in tqdm(range(result.val_labels.shape[0]), desc="distance detectors", leave=False):
        # Sorted rows read a memory-mapped file in order; the scores go back to row order.
        train_rows = np.sort(result.train_idx[t])
        val_order = np.argsort(result.val_idx[t])
        train_x = np.asarray(dataset.embeddings[train_rows])
        val_x = np.asarray(dataset.embeddings[result.val_idx[t][val_order]])
        try:
            scores = dict(mahalanobis=evaluate.mahalanobis_scores(train_x, labels[train_rows],
                                                                  val_x),
                          knn=evaluate.knn_scores(train_x, val_x))
        except evaluate.NoWithinClassSpread:
            logging.warning("the report leaves out the embedding detectors (%s): trial %d's "
                            "training rows do not vary within any class.",
                            ", ".join(evaluate.EMBEDDING_DETECTORS), t)
            return None
        unsort = np.empty_like(val_order)
        unsort[val_order] = np.arange(val_order.size)
        out.append({k: v[unsort] for k, v in scores.items()})
    return out


def fit_members(result: SweepResult, members: Sequence[int], selection: np.ndarray, *,
                scores: Sequence[dict] | None, detectors: Sequence[str]
                ) -> dict[int, evaluate.PostHoc]:
    """`evaluate.fit_posthoc` of each member in `members` on its trial's selection rows
    (selection[t] True), with the embedding detectors' scores there when `scores` is given."""
    fits = {}
    for i in tqdm(members, desc="post-hoc fits", leave=False):
        t = int(result.members[i]["trial"])
        rows = selection[t]
        fits[i] = evaluate.fit_posthoc(
            result.val_probs[i][rows], result.val_labels[t][rows], result.seen_mask[t],
            embedding_scores=None if scores is None else {k: v[rows]
                                                           for k, v in scores[t].items()},
            detectors=detectors)
    return fits
