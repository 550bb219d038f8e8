"""Sampling shared by every source: min_class_size, per_class, max_items, drawn with seed."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from embaug_jax.sources.items import SourceData, add_count
from embaug_jax.util import UserError


def select_items(labels: Sequence[str], *, min_class_size: int = 0, per_class: int = 0,
                 max_items: int = 0, seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """Deterministic, stratified choice of items; returns (sorted indices, dropped counts).

    Classes with fewer than `min_class_size` items are dropped whole; each class then keeps at
    most `per_class` items; if more than `max_items` remain, each class keeps an equal share
    (a class smaller than its share keeps all, and the rest is re-shared among the others).
    Which items a class keeps is a seeded permutation, so the choice is the same on every run.
    """
    names, label_ids = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return select_classified(label_ids, names.tolist(), min_class_size=min_class_size,
                             per_class=per_class, max_items=max_items, seed=seed)


def select_classified(label_ids: np.ndarray, class_names: Sequence[str], *,
                      min_class_size: int = 0, per_class: int = 0, max_items: int = 0,
                      seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """`select_items` of labels given as indices into `class_names`: the same choice as
    `select_items(np.asarray(class_names)[label_ids], ...)`, without the labels' strings."""
    for name, v in (("min_class_size", min_class_size), ("per_class", per_class),
                    ("max_items", max_items)):
        if int(v) < 0:
            raise UserError(f"config.source.{name} must be >= 0 (0 = no limit), got {v}.")
    label_ids = np.asarray(label_ids).reshape(-1)
    dropped: dict[str, int] = {}
    counts = np.bincount(label_ids, minlength=len(class_names))
    # Each class's items in source order; the classes present, in the order of their names
    # (as np.unique sorts the labels).
    by_class = np.split(np.argsort(label_ids, kind="stable"), np.cumsum(counts)[:-1])
    present = sorted((c for c in range(len(class_names)) if counts[c]),
                     key=lambda c: str(class_names[c]))
    classes = [str(class_names[c]) for c in present]
    members = [by_class[c] for c in present]
    keep_class = [len(m) >= min_class_size for m in members]
    add_count(dropped, f"class smaller than min_class_size={min_class_size}",
              sum(len(m) for m, k in zip(members, keep_class) if not k))
    members = [m for m, k in zip(members, keep_class) if k]
    classes = [c for c, k in zip(classes, keep_class) if k]
    # One seeded permutation per class (keyed by the class name, so it does not depend on which
    # other classes exist): the first `quota` items of it are kept.
    orders = []
    for name, m in zip(classes, members):
        class_seed = int.from_bytes(name.encode("utf-8")[:8].ljust(8, b"\0"), "little")
        rng = np.random.default_rng([int(seed), class_seed, len(name)])
        orders.append(m[rng.permutation(len(m))])
    quotas = np.array([len(m) for m in members], np.int64)
    if per_class:
        add_count(dropped, f"over per_class={per_class}",
                  np.maximum(quotas - per_class, 0).sum())
        quotas = np.minimum(quotas, per_class)
    if max_items and quotas.sum() > max_items:
        before = quotas.sum()
        quotas = _water_fill(quotas, max_items)
        add_count(dropped, f"over max_items={max_items}", before - quotas.sum())
    kept = [o[:q] for o, q in zip(orders, quotas)]
    indices = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    return indices, dropped


def _water_fill(sizes: np.ndarray, total: int) -> np.ndarray:
    """Per-class quotas summing to `total`: equal shares, capped by each class's size."""
    quotas = np.zeros_like(sizes)
    remaining, open_ = int(total), np.ones(len(sizes), bool)
    while remaining > 0 and open_.any():
        share = remaining // open_.sum()
        if share == 0:
            # Fewer items left than open classes: one more each to the largest open classes
            # (ties by class order), so the split is deterministic.
            order = np.lexsort((np.arange(len(sizes)), -(sizes - quotas)))
            for c in order[open_[order]][:remaining]:
                quotas[c] += 1
            break
        add = np.where(open_, np.minimum(share, sizes - quotas), 0)
        quotas += add
        remaining -= int(add.sum())
        open_ &= quotas < sizes
    return quotas


def apply_sampling(labels: Sequence[str], src: Any) -> tuple[np.ndarray, dict[str, int]]:
    """`select_items` with the sampling knobs of `config.source`."""
    return select_items(labels, **_knobs(src))


def _knobs(src: Any) -> dict[str, int]:
    """The sampling knobs of `config.source`, as `select_items` takes them."""
    return dict(min_class_size=int(src.min_class_size), per_class=int(src.per_class),
                max_items=int(src.max_items), seed=int(src.seed))


def finish(data: SourceData, src: Any) -> SourceData:
    """Applies the shared sampling knobs; classes left without items are removed."""
    # With every knob 0 all items are kept: the per-item orders a choice sorts are not built.
    if any(int(v) for v in (src.min_class_size, src.per_class, src.max_items)):
        indices, dropped = select_classified(data.label_ids, data.class_names, **_knobs(src))
        if len(indices) != len(data):
            data = data.subset(indices)
        for reason, count in dropped.items():
            add_count(data.dropped, reason, count)
    data.drop_empty_classes()
    if len(data) == 0:
        raise UserError(f"The source has no items left (dropped: {data.dropped}). Loosen "
                        "min_class_size / the filters, or check the data.")
    return data


