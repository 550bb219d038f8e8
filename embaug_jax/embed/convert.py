"""Checkpoint converters: Keras / PyTorch / timm EfficientNet weights -> safetensors.

Each converter turns a checkpoint into a flat {"params/...": array, "batch_stats/...": array}
dict in this package's naming plus a `WeightsInfo` (variant, padding, batch-norm epsilon,
input normalisation). `convert_file` checks it strictly against the Flax model and writes a
safetensors file that `ImageEmbedder.from_pretrained` loads without Keras or PyTorch.

Renaming follows the usual rules: conv OIHW -> HWIO, norm weight -> scale, running stats ->
batch_stats. Classifier weights are dropped (the embedder stops at the pooled features); any
other leaf that has no place in the model, or a model leaf the checkpoint lacks, is an error
naming it in the checkpoint's own naming. No pickle is loaded except through
`torch.load(weights_only=True)`.

Command line: `embaug convert efficientnet SRC DST [--from keras|pytorch|lite|timm|timm_tf]
[--variant b4]`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from flax import traverse_util

from embaug_jax.embed import efficientnet as effnet
from embaug_jax.embed.weights import (
    listing,
    load_safetensors,
    merge_strict,
    save_safetensors,
    written_here,
)
from embaug_jax.util import UserError, check_replaceable

# Transforms from a source layout to the Flax one.
_CONV_OIHW = lambda a: np.transpose(a, (2, 3, 1, 0))  # noqa: E731  (O,I,H,W) -> (H,W,I,O)
_KERAS_DW = lambda a: np.transpose(a, (0, 1, 3, 2))  # noqa: E731  (H,W,C,1) -> (H,W,1,C)
_SAME = lambda a: a  # noqa: E731

# (flax leaf suffix under a batch-norm, torch suffix, keras weight name)
_BN_LEAVES = (("params", "scale", "weight", "gamma"),
              ("params", "bias", "bias", "beta"),
              ("batch_stats", "mean", "running_mean", "moving_mean"),
              ("batch_stats", "var", "running_var", "moving_variance"))

SourceMap = dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]  # flax key -> (src, fn)


# ---------------------------------------------------------------------------------------------
# Name tables: for every Flax leaf, the source leaf it comes from.
# ---------------------------------------------------------------------------------------------


def _torch_conv_bn(table: SourceMap, flax_mod: str, conv: str | None, bn: str,
                   flax_conv: str = "conv", flax_bn: str = "bn", dw: bool = False) -> None:
    if conv is not None:
        table[f"params/{flax_mod}/{flax_conv}/kernel"] = (f"{conv}.weight", _CONV_OIHW)
    for col, leaf, torch_leaf, _ in _BN_LEAVES:
        table[f"{col}/{flax_mod}/{flax_bn}/{leaf}"] = (f"{bn}.{torch_leaf}", _SAME)


def _torch_block(table: SourceMap, arch: effnet.Architecture, names: Callable[[int, int, bool],
                 dict[str, str]]) -> None:
    for s, b, spec in arch.blocks():
        mod = f"block{s}_{b}"
        n = names(s, b, spec.expand_ratio != 1)
        if spec.expand_ratio != 1:
            table[f"params/{mod}/expand_conv/kernel"] = (f"{n['expand_conv']}.weight", _CONV_OIHW)
            _torch_conv_bn(table, mod, None, n["expand_bn"], flax_bn="expand_bn")
        table[f"params/{mod}/dw_conv/kernel"] = (f"{n['dw_conv']}.weight", _CONV_OIHW)
        _torch_conv_bn(table, mod, None, n["dw_bn"], flax_bn="dw_bn")
        if spec.se_filters:
            for flax_name, src in (("se_reduce", n["se_reduce"]), ("se_expand", n["se_expand"])):
                table[f"params/{mod}/{flax_name}/kernel"] = (f"{src}.weight", _CONV_OIHW)
                table[f"params/{mod}/{flax_name}/bias"] = (f"{src}.bias", _SAME)
        table[f"params/{mod}/project_conv/kernel"] = (f"{n['project_conv']}.weight", _CONV_OIHW)
        _torch_conv_bn(table, mod, None, n["project_bn"], flax_bn="project_bn")


def pytorch_table(arch: effnet.Architecture) -> SourceMap:
    """efficientnet-pytorch (lukemelas) / efficientnet-lite-pytorch state-dict names."""
    table: SourceMap = {}
    _torch_conv_bn(table, "stem", "_conv_stem", "_bn0")
    index = {(s, b): i for i, (s, b, _) in enumerate(arch.blocks())}

    def names(s: int, b: int, expands: bool) -> dict[str, str]:
        p = f"_blocks.{index[s, b]}"
        return {"expand_conv": f"{p}._expand_conv", "expand_bn": f"{p}._bn0",
                "dw_conv": f"{p}._depthwise_conv", "dw_bn": f"{p}._bn1",
                "se_reduce": f"{p}._se_reduce", "se_expand": f"{p}._se_expand",
                "project_conv": f"{p}._project_conv", "project_bn": f"{p}._bn2"}

    _torch_block(table, arch, names)
    _torch_conv_bn(table, "head", "_conv_head", "_bn1")
    return table


def timm_table(arch: effnet.Architecture) -> SourceMap:
    """timm `efficientnet_bN` / `tf_efficientnet_bN` names.

    Stage 0 blocks (expand ratio 1) are timm's DepthwiseSeparableConv (conv_dw, bn1, se,
    conv_pw, bn2); the rest are InvertedResidual (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3).
    """
    table: SourceMap = {}
    _torch_conv_bn(table, "stem", "conv_stem", "bn1")

    def names(s: int, b: int, expands: bool) -> dict[str, str]:
        p = f"blocks.{s}.{b}"
        if not expands:
            return {"dw_conv": f"{p}.conv_dw", "dw_bn": f"{p}.bn1",
                    "se_reduce": f"{p}.se.conv_reduce", "se_expand": f"{p}.se.conv_expand",
                    "project_conv": f"{p}.conv_pw", "project_bn": f"{p}.bn2"}
        return {"expand_conv": f"{p}.conv_pw", "expand_bn": f"{p}.bn1",
                "dw_conv": f"{p}.conv_dw", "dw_bn": f"{p}.bn2",
                "se_reduce": f"{p}.se.conv_reduce", "se_expand": f"{p}.se.conv_expand",
                "project_conv": f"{p}.conv_pwl", "project_bn": f"{p}.bn3"}

    _torch_block(table, arch, names)
    _torch_conv_bn(table, "head", "conv_head", "bn2")
    return table


def keras_table(arch: effnet.Architecture) -> SourceMap:
    """Keras applications names, as "layer_name/weight_name"."""
    table: SourceMap = {}

    def conv_bn(mod: str, conv: str | None, bn: str, flax_conv="conv", flax_bn="bn"):
        if conv is not None:
            table[f"params/{mod}/{flax_conv}/kernel"] = (f"{conv}/kernel", _SAME)
        for col, leaf, _, keras_leaf in _BN_LEAVES:
            table[f"{col}/{mod}/{flax_bn}/{leaf}"] = (f"{bn}/{keras_leaf}", _SAME)

    conv_bn("stem", "stem_conv", "stem_bn")
    for s, b, spec in arch.blocks():
        mod, p = f"block{s}_{b}", f"block{s + 1}{chr(97 + b)}_"
        if spec.expand_ratio != 1:
            table[f"params/{mod}/expand_conv/kernel"] = (f"{p}expand_conv/kernel", _SAME)
            conv_bn(mod, None, f"{p}expand_bn", flax_bn="expand_bn")
        table[f"params/{mod}/dw_conv/kernel"] = (f"{p}dwconv/depthwise_kernel", _KERAS_DW)
        conv_bn(mod, None, f"{p}bn", flax_bn="dw_bn")
        if spec.se_filters:
            for flax_name in ("se_reduce", "se_expand"):
                table[f"params/{mod}/{flax_name}/kernel"] = (f"{p}{flax_name}/kernel", _SAME)
                table[f"params/{mod}/{flax_name}/bias"] = (f"{p}{flax_name}/bias", _SAME)
        table[f"params/{mod}/project_conv/kernel"] = (f"{p}project_conv/kernel", _SAME)
        conv_bn(mod, None, f"{p}project_bn", flax_bn="project_bn")
    conv_bn("head", "top_conv", "top_bn")
    return table


# ---------------------------------------------------------------------------------------------
# Applying a table
# ---------------------------------------------------------------------------------------------


def apply_table(table: SourceMap, source: Mapping[str, np.ndarray], *, ignore: Callable[[str],
                bool], source_name: str) -> dict[str, np.ndarray]:
    """Renames `source` into Flax leaves; an unused or missing source leaf is a ValueError."""
    used = {src for src, _ in table.values()}
    missing = sorted(f"{src}  (-> {key})" for key, (src, _) in table.items() if src not in source)
    unexpected = sorted(k for k in source if k not in used and not ignore(k))
    if missing or unexpected:
        lines = [f"{source_name} does not match EfficientNet's layout:"]
        for title, items in (("missing from the checkpoint", missing),
                             ("unexpected in the checkpoint", unexpected)):
            if items:
                lines.append(listing(title, items))
        lines.append("Check --variant and --from (keras / pytorch / lite / timm / timm_tf).")
        raise UserError("\n".join(lines))
    return {key: np.asarray(fn(np.asarray(source[src]))) for key, (src, fn) in table.items()}


def check_strict(arch: effnet.Architecture, flat: Mapping[str, np.ndarray], *,
                 source: str) -> dict[str, np.ndarray]:
    """Validates shapes against the Flax model (ValueError naming every bad leaf)."""
    tree = merge_strict(effnet.expected_variables(arch), flat, source=source)
    return traverse_util.flatten_dict(tree, sep="/")


def _signature(arch: effnet.Architecture) -> tuple[int, int, int, int, bool]:
    return (arch.num_blocks, arch.stem_filters, arch.stages[-1][-1].out_filters,
            arch.head_filters, arch.activation == "swish")


def _infer_variant(*, num_blocks: int, stem: int, head_in: int, head: int, has_se: bool,
                   source_name: str) -> str:
    """The variant whose block count and stem/head widths these are (unique per variant)."""
    for v in effnet.VARIANTS:
        if _signature(effnet.architecture(v)) == (num_blocks, stem, head_in, head, has_se):
            return v
    raise UserError(f"{source_name}: no EfficientNet variant has {num_blocks} blocks, stem "
                    f"{stem}, head {head_in}->{head}{'' if has_se else ' without SE'}; "
                    "pass --variant")


# ---------------------------------------------------------------------------------------------
# PyTorch state dicts (efficientnet-pytorch / -lite naming, timm naming)
# ---------------------------------------------------------------------------------------------


def torch_load_weights(path: str | Path) -> Any:
    """`torch.load(weights_only=True)`: tensors only, never code from a pickle.

    Raises:
      UserError: the file holds other objects (or is no checkpoint at all). The message names the
        file and never repeats torch's advice to retry with weights_only=False, which would run
        whatever code the pickle holds.
    """
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip), EOFError (truncated) ...
        kind = ("it holds Python objects other than tensors, which are not loaded (unpickling "
                "them could run code)" if "weights_only" in str(e) or
                "Unpickl" in type(e).__name__ else f"not a readable PyTorch checkpoint "
                f"({type(e).__name__})")
        raise UserError(f"{path}: refused: {kind}. Use a safetensors copy of the weights "
                        "(model.safetensors), or convert the checkpoint where you trust it."
                        ) from e


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A `.pth`/`.pt`/`.bin` (torch.load with weights_only=True) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        from embaug_jax.embed.weights import load_safetensors
        return load_safetensors(path)[0]
    try:
        import torch  # noqa: F401  (only to say how to install it)
    except ImportError as e:  # pragma: no cover - torch is a test/convert extra
        raise ImportError("reading .pth checkpoints needs torch (pip install "
                          "'embaug_jax[convert]'), or convert them to safetensors") from e
    state = torch_load_weights(path)
    for key in ("state_dict", "model", "model_state_dict"):  # common training wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")  # DataParallel
        out[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    return out


def _torch_ignored(key: str) -> bool:
    return key.endswith("num_batches_tracked") or key.split(".")[0] in ("_fc", "classifier", "fc")


def convert_pytorch(state: Mapping[str, np.ndarray], *, variant: str | None = None,
                    lite: bool | None = None, source_name: str = "PyTorch checkpoint"
                    ) -> tuple[dict[str, np.ndarray], effnet.WeightsInfo]:
    """efficientnet-pytorch / efficientnet-lite-pytorch naming -> (flat Flax leaves, info)."""
    if "_conv_stem.weight" not in state:
        raise UserError(f"{source_name} has no '_conv_stem.weight': not efficientnet-pytorch "
                        "naming (timm checkpoints use --from timm / timm_tf)")
    if variant is None:
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k))}
        variant = _infer_variant(num_blocks=len(blocks), stem=state["_conv_stem.weight"].shape[0],
                                 head_in=state["_conv_head.weight"].shape[1],
                                 head=state["_conv_head.weight"].shape[0],
                                 has_se=any("_se_reduce" in k for k in state),
                                 source_name=source_name)
    variant = effnet._check_variant(variant)
    arch = effnet.architecture(variant)
    is_lite = variant.startswith("lite") if lite is None else lite
    flat = apply_table(pytorch_table(arch), state, ignore=_torch_ignored, source_name=source_name)
    info = effnet.default_weights_info(variant, "lite" if is_lite else "pytorch")
    return check_strict(arch, flat, source=source_name), info


def convert_timm(state: Mapping[str, np.ndarray], *, tf_ported: bool, variant: str | None = None,
                 source_name: str = "timm checkpoint"
                 ) -> tuple[dict[str, np.ndarray], effnet.WeightsInfo]:
    """timm naming -> (flat Flax leaves, info).

    Args:
      tf_ported: True for `tf_efficientnet_*` (TF "SAME" padding, epsilon 1e-3), False for
        timm's own `efficientnet_*` (symmetric padding, epsilon 1e-5). Both use ImageNet
        mean/std. The weights alone cannot tell them apart.
    """
    if "conv_stem.weight" not in state:
        raise UserError(f"{source_name} has no 'conv_stem.weight': not timm naming")
    if variant is None:
        blocks = {m.group(1, 2) for k in state if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))}
        variant = _infer_variant(num_blocks=len(blocks), stem=state["conv_stem.weight"].shape[0],
                                 head_in=state["conv_head.weight"].shape[1],
                                 head=state["conv_head.weight"].shape[0],
                                 has_se=any(".se." in k for k in state), source_name=source_name)
    variant = effnet._check_variant(variant)
    arch = effnet.architecture(variant)
    flat = apply_table(timm_table(arch), state, ignore=_torch_ignored, source_name=source_name)
    info = effnet.default_weights_info(variant, "timm_tf" if tf_ported else "timm")
    return check_strict(arch, flat, source=source_name), info


# ---------------------------------------------------------------------------------------------
# Keras applications (.keras zip, Keras 3 .weights.h5, legacy / Keras 2 .h5)
# ---------------------------------------------------------------------------------------------

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


def _keras_layer_sequence(arch: effnet.Architecture, imagenet_rescaling: bool
                          ) -> list[tuple[str, str]]:
    """(layer name, class) of the weighted layers of keras.applications.EfficientNet, in order."""
    seq = [("normalization", "Normalization"), ("stem_conv", "Conv2D"),
           ("stem_bn", "BatchNormalization")]
    for s, b, spec in arch.blocks():
        p = f"block{s + 1}{chr(97 + b)}_"
        if spec.expand_ratio != 1:
            seq += [(f"{p}expand_conv", "Conv2D"), (f"{p}expand_bn", "BatchNormalization")]
        seq += [(f"{p}dwconv", "DepthwiseConv2D"), (f"{p}bn", "BatchNormalization")]
        if spec.se_filters:
            seq += [(f"{p}se_reduce", "Conv2D"), (f"{p}se_expand", "Conv2D")]
        seq += [(f"{p}project_conv", "Conv2D"), (f"{p}project_bn", "BatchNormalization")]
    seq += [("top_conv", "Conv2D"), ("top_bn", "BatchNormalization"), ("predictions", "Dense")]
    return seq


def _native_keys(sequence: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """layer name -> (group key in a native weights file, class), by Keras's per-class count."""
    counts: dict[str, int] = {}
    out = {}
    for name, cls in sequence:
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


def _read_keras_h5(f, config: dict | None, source_name: str
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """-> ({"layer/weight": array}, {"config": model config or None, ...})."""
    import h5py

    if "layers" in f and isinstance(f["layers"], h5py.Group):
        # Keras 3 native: layers/<class_name[_i]>/vars/<i>; names come from the model config
        # (in a .keras zip) or from the variant's known layer order.
        groups = set(f["layers"].keys())
        if config is not None:
            sequence = [(l["config"]["name"], l["class_name"]) for l in config["config"]["layers"]]
            counts: dict[str, int] = {}
            keys = {}
            for name, cls in sequence:
                base = _keras_snake(cls)
                i = counts.get(base, 0)
                counts[base] = i + 1
                keys[name] = (base if i == 0 else f"{base}_{i}", cls)
        else:
            n_blocks = len([g for g in groups if re.fullmatch(r"depthwise_conv2d(_\d+)?", g)])
            convs = sorted((int(m.group(1) or 0), g) for g in groups
                           if (m := re.fullmatch(r"conv2d(?:_(\d+))?", g)))
            if not convs:
                raise UserError(f"{source_name} has no Conv2D layers: not a keras.applications "
                                "EfficientNet")
            # The stem is the first Conv2D and the head conv the last.
            variant = _infer_variant(
                num_blocks=n_blocks, stem=f[f"layers/{convs[0][1]}/vars/0"].shape[-1],
                head_in=f[f"layers/{convs[-1][1]}/vars/0"].shape[-2],
                head=f[f"layers/{convs[-1][1]}/vars/0"].shape[-1],
                has_se=len(convs) > 2 * n_blocks + 2, source_name=source_name)
            keys = _native_keys(_keras_layer_sequence(effnet.architecture(variant), False))
        out = {}
        for name, (key, cls) in keys.items():
            if cls not in _KERAS_VARS or key not in groups:
                continue
            vars_group = f[f"layers/{key}"].get("vars")
            if vars_group is None:
                continue
            if cls == "Normalization":
                name = "normalization"  # auto-named (normalization_1, ...) when Keras built several
            for i, wname in enumerate(_KERAS_VARS[cls]):
                if str(i) in vars_group:
                    out[f"{name}/{wname}"] = vars_group[str(i)][()]
        # Group names count per class, so a second Rescaling group is Keras's ImageNet one.
        return out, {"config": config, "imagenet_rescaling": "rescaling_1" in groups}
    # Legacy HDF5 (Keras 2 weights files, Keras 3 `model.save("x.h5")`).
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
    return out, {"config": config}


def read_keras(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads a `.keras` archive or an `.h5` weights/model file -> (weights, layout info)."""
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
                return _read_keras_h5(f, config, str(path))
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} is neither a .keras archive nor an HDF5 file: {e}") from e
    with f:
        return _read_keras_h5(f, None, str(path))


def _keras_normalisation(weights: Mapping[str, np.ndarray], layout: dict[str, Any]
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's own input pipeline as 0..255 (mean, std): Rescaling -> Normalization
    [-> Rescaling(1 / sqrt(std)), which Keras adds to its ImageNet weights]."""
    if "normalization/mean" not in weights:
        raise UserError("the Keras file has no normalization layer weights: not a "
                        "keras.applications EfficientNet")
    mean = np.asarray(weights["normalization/mean"], np.float64).reshape(-1)
    var = np.asarray(weights["normalization/variance"], np.float64).reshape(-1)
    scale_in, scale_out = 1.0 / 255.0, np.ones(3)
    config = layout.get("config")
    if config is not None:
        rescalings = [l["config"] for l in config["config"]["layers"]
                      if l["class_name"] == "Rescaling"]
        if rescalings:
            scale_in = float(np.asarray(rescalings[0]["scale"]).reshape(-1)[0])
            if np.any(np.asarray(rescalings[0].get("offset", 0.0)) != 0):
                raise UserError("the Keras model's first Rescaling has an offset; unsupported")
        if len(rescalings) > 1:
            scale_out = np.broadcast_to(np.asarray(rescalings[1]["scale"], np.float64), (3,))
    elif layout.get("imagenet_rescaling") or np.allclose(var, [0.229, 0.224, 0.225], atol=1e-6):
        # Keras's ImageNet files store std (not std^2) as the variance and add this layer.
        scale_out = 1.0 / np.sqrt(np.asarray([0.229, 0.224, 0.225]))
    std = np.sqrt(np.maximum(var, 0)) / scale_out
    # y = (x * scale_in - mean) / std  ==  (x - mean / scale_in) / (std / scale_in)
    return (tuple(float(v) for v in mean / scale_in), tuple(float(v) for v in std / scale_in))


def convert_keras(path: str | Path, *, variant: str | None = None
                  ) -> tuple[dict[str, np.ndarray], effnet.WeightsInfo]:
    """keras.applications.EfficientNetB0..B7 (`.keras`, `.weights.h5`, `.h5`) -> (flat, info)."""
    weights, layout = read_keras(path)
    source_name = str(path)
    if variant is None:
        n_blocks = len({k.split("/")[0] for k in weights if k.split("/")[0].endswith("_dwconv")})
        if "stem_conv/kernel" not in weights:
            raise UserError(f"{path} has no stem_conv kernel: not a keras.applications "
                            "EfficientNet")
        variant = _infer_variant(num_blocks=n_blocks, stem=weights["stem_conv/kernel"].shape[-1],
                                 head_in=weights["top_conv/kernel"].shape[-2],
                                 head=weights["top_conv/kernel"].shape[-1], has_se=True,
                                 source_name=source_name)
    variant = effnet._check_variant(variant)
    arch = effnet.architecture(variant)
    mean, std = _keras_normalisation(weights, layout)

    def ignore(k: str) -> bool:
        return k.startswith(("normalization/", "predictions/"))

    flat = apply_table(keras_table(arch), weights, ignore=ignore, source_name=source_name)
    info = effnet.WeightsInfo(variant, "keras", "tf", 1e-3, mean, std)
    return check_strict(arch, flat, source=source_name), info


# ---------------------------------------------------------------------------------------------
# Files and the command line
# ---------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# BERT: Hugging Face checkpoints (read in memory by `TextEmbedder.from_pretrained`)

# Hugging Face sub-module name inside `encoder.layer.{i}.` -> our module name inside `layer_{i}/`.
_HF_LAYER_MODULES = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def convert_hf_state_dict(
    state: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Converts a Hugging Face BERT state dict to our flat {"a/b/c": array} parameter layout.

    Linear weights [out, in] become Dense kernels [in, out]; LayerNorm weight/gamma -> scale and
    bias/beta -> bias; embedding weight -> embedding. Names this function does not know are passed
    through (dots -> slashes), so a strict merge reports them as unexpected rather than losing them.

    Returns:
        (flat parameters, the Hugging Face names that were ignored: pooler, task heads, buffers).
    """
    prefixed = any(k.startswith("bert.") for k in state)
    flat: dict[str, np.ndarray] = {}
    ignored: list[str] = []
    for hf_name, value in state.items():
        name = hf_name
        if prefixed:
            if not name.startswith("bert."):
                ignored.append(hf_name)  # a task head of a BertFor* checkpoint
                continue
            name = name[len("bert."):]
        if name in _HF_BUFFERS or not name.startswith(("embeddings.", "encoder.")):
            ignored.append(hf_name)  # buffers, the pooler, heads of a head-only layout
            continue
        flat[_flax_name(name, np.ndim(value))] = _flax_value(name, np.asarray(value))
    return flat, ignored


def _flax_name(name: str, ndim: int) -> str:
    module, _, leaf = name.rpartition(".")
    is_norm = module.endswith("LayerNorm")
    if module.startswith("encoder.layer."):
        index, _, sub = module[len("encoder.layer."):].partition(".")
        module = f"layer_{index}/{_HF_LAYER_MODULES.get(sub, sub.replace('.', '/'))}"
    else:
        module = module.replace(".", "/")
    if is_norm:
        leaf = {"weight": "scale", "gamma": "scale", "beta": "bias"}.get(leaf, leaf)
    elif module.endswith("_embeddings") and leaf == "weight":
        leaf = "embedding"
    elif leaf == "weight" and ndim == 2:
        leaf = "kernel"
    return f"{module}/{leaf}"


def _flax_value(name: str, value: np.ndarray) -> np.ndarray:
    module, _, leaf = name.rpartition(".")
    if leaf == "weight" and value.ndim == 2 and not module.endswith(("_embeddings", "LayerNorm")):
        return np.ascontiguousarray(value.T)
    return value


def _weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors preferred; raises if there are none."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text()).get("weight_map", {})
            files = [folder / f for f in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{folder / index} names missing shards: {missing}")
            return files
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors (or model.safetensors.index.json with "
        "its shards), or pytorch_model.bin"
    )


def _read_state_dict(files: Sequence[Path]) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for f in files:
        if f.suffix == ".safetensors":
            state.update(_read_safetensors(f))
        else:
            loaded = torch_load_weights(f)  # legacy pytorch_model.bin: needs torch
            state.update({k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
                          for k, v in loaded.items()})
    return state


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_safetensors(path)[0]
    except ValueError as e:
        if "bfloat16" not in str(e):
            raise
    # numpy alone has no bfloat16; JAX's loader reads it (as ml_dtypes.bfloat16), and the merge
    # casts every tensor to the model's float32 anyway.
    from safetensors.flax import load_file

    return {k: np.asarray(v) for k, v in load_file(str(path)).items()}


# ----------------------------------------------------------------------------------------------
# Files and the command line

ORIGINS = effnet.ORIGINS


def guess_origin(path: str | Path) -> str:
    """The origin a checkpoint's format suggests (a guess: pass --from to be explicit)."""
    path = Path(path)
    if path.suffix in (".keras", ".h5"):
        return "keras"
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
        if "_conv_stem.weight" in keys:
            return "pytorch"
        if "conv_stem.weight" in keys:
            return "timm_tf" if "tf_" in path.name else "timm"
        raise UserError(f"{path}: unrecognised safetensors naming; pass --from")
    return "pytorch"


def convert_checkpoint(src: str | Path, *, origin: str | None = None,
                       variant: str | None = None) -> tuple[dict[str, np.ndarray],
                                                            effnet.WeightsInfo]:
    """Reads and converts a checkpoint in memory -> (flat Flax leaves, `WeightsInfo`).

    Args:
      src: `.keras` / `.h5` (Keras), `.pth` / `.pt` / `.bin` / `.safetensors` (PyTorch, timm).
      origin: "keras", "pytorch", "lite", "timm" or "timm_tf"; None guesses from the file.
      variant: "b0".."b7" / "lite0".."lite4"; None infers it from the shapes.
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"no checkpoint at {src}")
    origin = origin or guess_origin(src)
    if origin not in ORIGINS:
        raise UserError(f"unknown origin {origin!r}; choose one of {ORIGINS}")
    if origin == "keras":
        return convert_keras(src, variant=variant)
    state = read_torch_state_dict(src)
    if origin in ("timm", "timm_tf"):
        return convert_timm(state, tf_ported=origin == "timm_tf", variant=variant,
                            source_name=str(src))
    return convert_pytorch(state, variant=variant, source_name=str(src),
                           lite=True if origin == "lite" else None)


def convert_file(src: str | Path, dst: str | Path, *, origin: str | None = None,
                 variant: str | None = None) -> effnet.WeightsInfo:
    """Converts a checkpoint to a safetensors file that `ImageEmbedder.from_pretrained` reads.

    Args:
      src: `.keras` / `.h5` (Keras), `.pth` / `.pt` / `.bin` / `.safetensors` (PyTorch, timm).
      dst: output `.safetensors` path (written atomically).
      origin: "keras", "pytorch", "lite", "timm" or "timm_tf"; None guesses from the file.
      variant: "b0".."b7" / "lite0".."lite4"; None infers it from the shapes.
    """
    check_replaceable(dst, written_here)  # before the conversion's work, not after it
    flat, info = convert_checkpoint(src, origin=origin, variant=variant)
    meta = dict(info.to_metadata(), source=Path(src).name)
    save_safetensors(dst, flat, meta)
    return info


def main(argv: list[str] | None = None) -> int:
    """`embaug convert efficientnet SRC DST [--from ...] [--variant ...]`.

    Args:
      argv: the program name then the arguments, as `sys.argv` (the CLI dispatcher passes
        ["embaug convert", ...]).
    Returns:
      The exit status: 0 on success, 2 on a bad checkpoint, file or argument.
    """
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=argv[0] if argv else "embaug convert",
        description="Convert pretrained checkpoints to safetensors that load without the "
                    "original framework.")
    sub = parser.add_subparsers(dest="model", required=True)
    p = sub.add_parser("efficientnet", help="Keras / PyTorch / timm EfficientNet B0-B7, Lite0-4")
    p.add_argument("src", help=".keras / .h5 / .pth / .bin / .safetensors checkpoint")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--from", dest="origin", choices=ORIGINS, default=None,
                   help="where the weights come from (default: guessed from the file); "
                        "timm_tf = timm's tf_efficientnet_* ports")
    p.add_argument("--variant", default=None,
                   help=f"one of {', '.join(effnet.VARIANTS)} (default: inferred from shapes)")
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as e:  # argparse exits on --help (0) and on bad arguments (2)
        return int(e.code or 0)
    try:
        info = convert_file(args.src, args.dst, origin=args.origin, variant=args.variant)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"embaug convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: EfficientNet-{info.variant} ({info.origin}, padding={info.padding}, "
          f"bn_epsilon={info.bn_epsilon:g}, mean={[round(m, 3) for m in info.mean]}, "
          f"std={[round(s, 3) for s in info.std]})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
