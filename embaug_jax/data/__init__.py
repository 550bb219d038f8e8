"""Embedding datasets: the on-disk format, splits and sources."""

from embaug_jax.data.dataset import (
    EmbeddingDataset,
    Segment,
    load_embeddings,
    save_embeddings,
)

__all__ = ["EmbeddingDataset", "Segment", "load_embeddings", "save_embeddings"]
