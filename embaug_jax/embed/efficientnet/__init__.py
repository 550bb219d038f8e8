"""EfficientNet image embeddings in Flax (paper, section 3.2), on converted pretrained weights.

- `model`: the B0-B7 and Lite0-4 architectures and the Flax feature extractor.
- `weights`: what a converted weights file says about its weights (`WeightsInfo`), per origin.
- `convert`: Keras / PyTorch / timm checkpoints -> this package's weights (`convert_file`).
- `embedder`: `ImageEmbedder`, images -> pooled features, sharded over devices.
"""
