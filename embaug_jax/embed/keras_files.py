"""Keras weights files read into flat arrays, without Keras: `.keras` archives, Keras 3's native
`.weights.h5`, and legacy HDF5 (`.h5` from Keras 2's `save_weights` or `model.save`).

Weights come back as {"layer/weight": array} in Keras's own naming ("block1a_dwconv/
depthwise_kernel", "stem_bn/moving_mean"). The model's input Normalization layer is always
"normalization", however Keras numbered it. A native weights file without its model config
does not name its layers; its weights keep the file's group names, by class and count
("conv2d_3/kernel"), and `native_groups` says which group a known model's layer is.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embaug_jax.util import UserError

# Variable order of Keras 3's native weights files, which store `vars/0, vars/1, ...`.
_KERAS_VARS = {
    "Conv2D": ("kernel", "bias"),
    "DepthwiseConv2D": ("depthwise_kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "Normalization": ("mean", "variance", "count"),
    "Dense": ("kernel", "bias"),
}


def _keras_snake(name: str) -> str:
    """Keras 3's `to_snake_case`: the group name a class gets in a native weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# Group name without its count ("conv2d" of "conv2d_3") -> the class whose weights it holds.
_CLASS_OF_GROUP = {_keras_snake(cls): cls for cls in _KERAS_VARS}


def native_groups(layers: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Where a model's layers keep their weights in a Keras 3 native weights file.

    Args:
      layers: the model's layers as (name, class name), in the model's order.
    Returns:
      layer name -> (its group in the file, class name): groups are named by class and
      numbered per class in the model's order ("conv2d", "conv2d_1", ...).
    """
    counts: dict[str, int] = {}
    out = {}
    for name, cls in layers:
        base = _keras_snake(cls)
        i = counts.get(base, 0)
        counts[base] = i + 1
        out[name] = (base if i == 0 else f"{base}_{i}", cls)
    return out


def _h5_datasets(group) -> dict[str, np.ndarray]:
    import h5py
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    group.visititems(visit)
    return out


def _read_native(f, config: dict | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Keras 3 native: layers/<class_name[_i]>/vars/<i>, named by the model config if there is
    one (a .keras zip), else by group."""
    groups = set(f["layers"].keys())
    if config is not None:
        keys = native_groups([(l["config"]["name"], l["class_name"])
                              for l in config["config"]["layers"]])
    else:
        keys = {g: (g, _CLASS_OF_GROUP[base]) for g in sorted(groups)
                if (base := re.sub(r"_\d+$", "", g)) in _CLASS_OF_GROUP}
    out = {}
    for name, (key, cls) in keys.items():
        if cls not in _KERAS_VARS or key not in groups:
            continue
        vars_group = f[f"layers/{key}"].get("vars")
        if vars_group is None:
            continue
        if cls == "Normalization" and config is not None:
            name = "normalization"  # auto-named (normalization_1, ...) when Keras built several
        for i, wname in enumerate(_KERAS_VARS[cls]):
            if str(i) in vars_group:
                out[f"{name}/{wname}"] = vars_group[str(i)][()]
    return out, {"config": config, "named_by": "layer" if config is not None else "group",
                 "groups": sorted(groups)}


def _read_legacy(f, config: dict | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Legacy HDF5 (Keras 2 weights files, Keras 3 `model.save("x.h5")`)."""
    root = f["model_weights"] if "model_weights" in f else f
    if config is None and "model_config" in f.attrs:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    names = root.attrs.get("layer_names")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None \
        else list(root.keys())
    out = {}
    for name in names:
        if name not in root:
            continue
        leaves = _h5_datasets(root[name])
        if {p.split("/")[-1].removesuffix(":0") for p in leaves} >= {"mean", "variance"}:
            name = "normalization"  # auto-named (normalization_1, ...) when Keras built several
        for path, arr in leaves.items():
            leaf = path.split("/")[-1].removesuffix(":0")
            if leaf == "kernel" and name.endswith("_dwconv"):
                leaf = "depthwise_kernel"  # Keras 3's legacy writer drops the "depthwise_"
            out[f"{name}/{leaf}"] = arr
    return out, {"config": config, "named_by": "layer"}


def _read_keras_h5(f, config: dict | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import h5py

    if "layers" in f and isinstance(f["layers"], h5py.Group):
        return _read_native(f, config)
    return _read_legacy(f, config)


def read_keras(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads a `.keras` archive or an `.h5` weights/model file.

    Returns:
      (weights, layout): weights as {"layer/weight": array} (or {"group/weight": array}, see the
      module docstring); layout["config"] is the model config when the file has one (else None),
      layout["named_by"] is "layer" or "group", and for native files layout["groups"] lists the
      file's layer groups.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Keras file at {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if "model.weights.h5" not in names:
                raise UserError(f"{path} is a zip without model.weights.h5: not a .keras file")
            config = json.loads(z.read("config.json")) if "config.json" in names else None
            with z.open("model.weights.h5") as raw, h5py.File(raw, "r") as f:
                return _read_keras_h5(f, config)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} is neither a .keras archive nor an HDF5 file: {e}") from e
    with f:
        return _read_keras_h5(f, None)
