"""BERT text embeddings in Flax, from any local Hugging Face BERT checkpoint (paper, section 3.2).

- `model`: the encoder (`BertConfig`, `BertModel`), with Hugging Face's numerics.
- `checkpoint`: a Hugging Face folder's config, weights (Hugging Face names -> the Flax tree)
  and tokenizer.
- `packing`: how texts become batches: length buckets, rows of packed texts, token streams
  (`BatchPlanner`).
- `embedder`: `TextEmbedder`, texts -> pooled vectors, sharded over devices.
"""
