"""embaug_jax: data augmentation of pre-computed embeddings in JAX/Flax.

Data flows one way, and each stage is a folder or module of this package: sources/ -> embed/
(cached on disk in the `dataset` format) -> augment -> train/ -> evaluate/ -> report/; run/
holds the commands that drive several stages in one workdir (laid out by `workdir.Workdir`).

What a notebook needs is here (`import embaug_jax as ea`); everything else is reachable from its
module. The names are imported on first use, so `import embaug_jax` (and `embaug --help`) loads
no JAX.

  x_mix, y_mix = ea.e_mixup(key, x, y, alpha=0.2)
  ds = ea.load_embeddings("workdir/demo/extract/embeddings")
  results = ea.train_and_evaluate(config, workdir)          # a config's whole sweep + report
  result = ea.run_sweep(config, data, members)              # the engine alone
  ea.write_report(workdir, result, dataset=ds, **config.report)  # ds: the distance detectors
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    # The paper's augmentations (sec. 2.2-2.4), and their traced form for sweeps.
    "e_mixup": "embaug_jax.augment",
    "e_stitchup": "embaug_jax.augment",
    "soft_e_mixup": "embaug_jax.augment",
    "soft_e_stitchup": "embaug_jax.augment",
    "soften_labels": "embaug_jax.augment",
    "augment_batch": "embaug_jax.augment",
    "method_params": "embaug_jax.augment",
    "MethodParams": "embaug_jax.augment",
    # Embedders.
    "TextEmbedder": "embaug_jax.embed.bert.embedder",
    "ImageEmbedder": "embaug_jax.embed.efficientnet.embedder",
    # The on-disk embedding dataset.
    "load_embeddings": "embaug_jax.dataset",
    "save_embeddings": "embaug_jax.dataset",
    # Training and the report.
    "train_and_evaluate": "embaug_jax.run.train",
    "run_sweep": "embaug_jax.train.driver",
    "write_report": "embaug_jax.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # PEP 562: the defining module is imported on first access, then the name is cached here.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'embaug_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
