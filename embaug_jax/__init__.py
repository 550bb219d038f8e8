"""embaug_jax: data augmentation of pre-computed embeddings in JAX/Flax.

Data flows one way: sources -> embeddings (cached on disk) -> augment -> train -> evaluate ->
report. Each stage is a module of this package named after it.
"""

__version__ = "0.1.0"
