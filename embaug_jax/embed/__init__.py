"""Embeddings: text (BERT) and image (EfficientNet) feature extractors, their weights and
converters, and the extraction pipeline that writes the embedding dataset format."""
