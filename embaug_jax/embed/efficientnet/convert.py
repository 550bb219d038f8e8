"""EfficientNet checkpoints of other frameworks -> this package's weights: Keras applications,
efficientnet-pytorch and -lite, timm (`efficientnet_*` and the TF ports `tf_efficientnet_*`).

Each converter turns a checkpoint into a flat {"params/...": array, "batch_stats/...": array}
dict in this package's naming plus a `WeightsInfo` (variant, padding, batch-norm epsilon,
input normalisation). `convert_file` checks it strictly against the Flax model and writes a
safetensors file that `ImageEmbedder.from_pretrained` loads without Keras or PyTorch.

Renaming follows the usual rules: conv OIHW -> HWIO, norm weight -> scale, running stats ->
batch_stats. Classifier weights are dropped (the embedder stops at the pooled features); any
other leaf that has no place in the model, or a model leaf the checkpoint lacks, is an error
naming it in the checkpoint's own naming. The files are read by `embed.keras_files` and
`embed.torch_files` (no pickle is loaded except through `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from flax import traverse_util

from embaug_jax.embed.efficientnet.model import (
    VARIANTS,
    Architecture,
    architecture,
    check_variant,
    expected_variables,
)
from embaug_jax.embed.efficientnet.weights import ORIGINS, WeightsInfo, default_weights_info
from embaug_jax.embed.keras_files import native_groups, read_keras
from embaug_jax.embed.torch_files import read_torch_state_dict
from embaug_jax.embed.weights import listing, merge_strict, save_safetensors, written_here
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


def _torch_block(table: SourceMap, arch: Architecture, names: Callable[[int, int, bool],
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


def pytorch_table(arch: Architecture) -> SourceMap:
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


def timm_table(arch: Architecture) -> SourceMap:
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


def keras_table(arch: Architecture) -> SourceMap:
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


def check_strict(arch: Architecture, flat: Mapping[str, np.ndarray], *,
                 source: str) -> dict[str, np.ndarray]:
    """Validates shapes against the Flax model (ValueError naming every bad leaf)."""
    tree = merge_strict(expected_variables(arch), flat, source=source)
    return traverse_util.flatten_dict(tree, sep="/")


def _signature(arch: Architecture) -> tuple[int, int, int, int, bool]:
    return (arch.num_blocks, arch.stem_filters, arch.stages[-1][-1].out_filters,
            arch.head_filters, arch.activation == "swish")


def _infer_variant(*, num_blocks: int, stem: int, head_in: int, head: int, has_se: bool,
                   source_name: str) -> str:
    """The variant whose block count and stem/head widths these are (unique per variant)."""
    for v in VARIANTS:
        if _signature(architecture(v)) == (num_blocks, stem, head_in, head, has_se):
            return v
    raise UserError(f"{source_name}: no EfficientNet variant has {num_blocks} blocks, stem "
                    f"{stem}, head {head_in}->{head}{'' if has_se else ' without SE'}; "
                    "pass --variant")


# ---------------------------------------------------------------------------------------------
# PyTorch state dicts (efficientnet-pytorch / -lite naming, timm naming)
# ---------------------------------------------------------------------------------------------


def _torch_ignored(key: str) -> bool:
    return key.endswith("num_batches_tracked") or key.split(".")[0] in ("_fc", "classifier", "fc")


def convert_pytorch(state: Mapping[str, np.ndarray], *, variant: str | None = None,
                    lite: bool | None = None, source_name: str = "PyTorch checkpoint"
                    ) -> tuple[dict[str, np.ndarray], WeightsInfo]:
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
    variant = check_variant(variant)
    arch = architecture(variant)
    is_lite = variant.startswith("lite") if lite is None else lite
    flat = apply_table(pytorch_table(arch), state, ignore=_torch_ignored, source_name=source_name)
    info = default_weights_info(variant, "lite" if is_lite else "pytorch")
    return check_strict(arch, flat, source=source_name), info


def convert_timm(state: Mapping[str, np.ndarray], *, tf_ported: bool, variant: str | None = None,
                 source_name: str = "timm checkpoint"
                 ) -> tuple[dict[str, np.ndarray], WeightsInfo]:
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
    variant = check_variant(variant)
    arch = architecture(variant)
    flat = apply_table(timm_table(arch), state, ignore=_torch_ignored, source_name=source_name)
    info = default_weights_info(variant, "timm_tf" if tf_ported else "timm")
    return check_strict(arch, flat, source=source_name), info


# ---------------------------------------------------------------------------------------------
# Keras applications (.keras zip, Keras 3 .weights.h5, legacy / Keras 2 .h5)
# ---------------------------------------------------------------------------------------------


def _keras_layer_sequence(arch: Architecture) -> list[tuple[str, str]]:
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


def _name_native_groups(weights: Mapping[str, np.ndarray], source_name: str
                        ) -> dict[str, np.ndarray]:
    """A native weights file's groups ("conv2d_3/kernel") under keras.applications' layer names
    ("block2a_expand_conv/kernel"): the variant, inferred from the shapes, fixes the order of
    the layers, and so which group each layer's weights are in."""
    groups = {k.split("/")[0] for k in weights}
    n_blocks = len([g for g in groups if re.fullmatch(r"depthwise_conv2d(_\d+)?", g)])
    convs = sorted((int(m.group(1) or 0), g) for g in groups
                   if (m := re.fullmatch(r"conv2d(?:_(\d+))?", g)))
    if not convs:
        raise UserError(f"{source_name} has no Conv2D layers: not a keras.applications "
                        "EfficientNet")
    # The stem is the first Conv2D and the head conv the last.
    variant = _infer_variant(
        num_blocks=n_blocks, stem=weights[f"{convs[0][1]}/kernel"].shape[-1],
        head_in=weights[f"{convs[-1][1]}/kernel"].shape[-2],
        head=weights[f"{convs[-1][1]}/kernel"].shape[-1],
        has_se=len(convs) > 2 * n_blocks + 2, source_name=source_name)
    layer_of = {group: name for name, (group, _) in
                native_groups(_keras_layer_sequence(architecture(variant))).items()}
    out = {}
    for key, value in weights.items():
        group, leaf = key.split("/", 1)
        if group in layer_of:
            out[f"{layer_of[group]}/{leaf}"] = value
    return out


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
    elif ("rescaling_1" in layout.get("groups", ())
          or np.allclose(var, [0.229, 0.224, 0.225], atol=1e-6)):
        # Keras's ImageNet files store std (not std^2) as the variance and add this layer. In a
        # native file, group names count per class, so a second Rescaling group is that one.
        scale_out = 1.0 / np.sqrt(np.asarray([0.229, 0.224, 0.225]))
    std = np.sqrt(np.maximum(var, 0)) / scale_out
    # y = (x * scale_in - mean) / std  ==  (x - mean / scale_in) / (std / scale_in)
    return (tuple(float(v) for v in mean / scale_in), tuple(float(v) for v in std / scale_in))


def convert_keras(path: str | Path, *, variant: str | None = None
                  ) -> tuple[dict[str, np.ndarray], WeightsInfo]:
    """keras.applications.EfficientNetB0..B7 (`.keras`, `.weights.h5`, `.h5`) -> (flat, info)."""
    weights, layout = read_keras(path)
    source_name = str(path)
    if layout["named_by"] == "group":
        weights = _name_native_groups(weights, source_name)
    if variant is None:
        n_blocks = len({k.split("/")[0] for k in weights if k.split("/")[0].endswith("_dwconv")})
        if "stem_conv/kernel" not in weights:
            raise UserError(f"{path} has no stem_conv kernel: not a keras.applications "
                            "EfficientNet")
        variant = _infer_variant(num_blocks=n_blocks, stem=weights["stem_conv/kernel"].shape[-1],
                                 head_in=weights["top_conv/kernel"].shape[-2],
                                 head=weights["top_conv/kernel"].shape[-1], has_se=True,
                                 source_name=source_name)
    variant = check_variant(variant)
    arch = architecture(variant)
    mean, std = _keras_normalisation(weights, layout)

    def ignore(k: str) -> bool:
        return k.startswith(("normalization/", "predictions/"))

    flat = apply_table(keras_table(arch), weights, ignore=ignore, source_name=source_name)
    info = WeightsInfo(variant, "keras", "tf", 1e-3, mean, std)
    return check_strict(arch, flat, source=source_name), info


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


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
                                                            WeightsInfo]:
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
                 variant: str | None = None,
                 check: Callable[[WeightsInfo], None] | None = None) -> WeightsInfo:
    """Converts a checkpoint to a safetensors file that `ImageEmbedder.from_pretrained` reads.

    Args:
      src: `.keras` / `.h5` (Keras), `.pth` / `.pt` / `.bin` / `.safetensors` (PyTorch, timm).
      dst: output `.safetensors` path (written atomically).
      origin: "keras", "pytorch", "lite", "timm" or "timm_tf"; None guesses from the file.
      variant: "b0".."b7" / "lite0".."lite4"; None infers it from the shapes.
      check: called with the converted weights' `WeightsInfo` before anything is written; an
        exception it raises leaves `dst` untouched.
    """
    check_replaceable(dst, written_here)  # before the conversion's work, not after it
    flat, info = convert_checkpoint(src, origin=origin, variant=variant)
    if check is not None:
        check(info)
    meta = dict(info.to_metadata(), source=Path(src).name)
    save_safetensors(dst, flat, meta)
    return info
