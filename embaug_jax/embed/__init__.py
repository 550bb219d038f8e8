"""Embeddings: text (BERT) and image (EfficientNet) feature extractors in Flax, and the
pretrained weights they run on.

- `bert/`, `efficientnet/`: each model, its weights and its embedder (`TextEmbedder`,
  `ImageEmbedder`).
- `weights`: this package's safetensors files, strict merging into a model's tree, content hashes.
- `keras_files`, `torch_files`: readers of other frameworks' checkpoint files.
- `images`: decoding and resizing images for the image embedder.
- `convert`: the `embaug convert` command.
- `extraction`: what `embaug extract` (`run/extract.py`) needs from this stage: embedders
  built from a config, their fingerprints, one shard of items embedded.
"""
