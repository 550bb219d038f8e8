"""Hugging Face BERT checkpoint folders: config, weights and tokenizer, read without PyTorch.

A folder holds config.json, the weights and tokenizer files. Weights: `model.safetensors` (or
its sharded index) is read with numpy; `pytorch_model.bin` is read with
`torch.load(weights_only=True)` only if no safetensors file exists. Hugging Face's names become
the Flax tree of `bert.model.BertModel` (`convert_hf_state_dict`): a "bert." prefix (BertFor*
checkpoints) is stripped; the pooler and any task head (`cls.*`, `classifier.*`, ...) are
ignored, as are the `position_ids`/`token_type_ids` buffers; everything under `embeddings.` and
`encoder.` is merged strictly: a missing, extra or misshapen tensor is a ValueError naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import traverse_util

from embaug_jax.embed.bert.model import BertConfig, param_shapes
from embaug_jax.embed.torch_files import torch_load_weights
from embaug_jax.embed.weights import load_safetensors, merge_strict
from embaug_jax.util import list_first, read_json


# ----------------------------------------------------------------------------------------------
# Files


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """`path` as a folder; FileNotFoundError saying what a checkpoint folder holds if it is none."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no checkpoint folder at {folder}: expected a Hugging Face BERT folder with "
            "config.json, model.safetensors (or pytorch_model.bin) and tokenizer.json (or vocab.txt)"
        )
    return folder


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors preferred; raises if there are none."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            index_json = read_json(folder / index)
            weight_map = index_json.get("weight_map") if isinstance(index_json, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{folder / index} names no weight files (it needs a "
                                 "'weight_map' object of tensor names and files).")
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
    """The tensors of `weight_files` as numpy arrays under Hugging Face's names (floats of a
    pytorch_model.bin as float32; a bfloat16 safetensors file's as ml_dtypes.bfloat16)."""
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
# Hugging Face names -> the Flax tree


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


def load_pretrained(path: str | os.PathLike) -> tuple[BertConfig, dict]:
    """Loads a Hugging Face BERT folder's config and weights as a float32 Flax parameter tree.

    Raises:
        FileNotFoundError: the folder, its config.json or its weights are missing.
        ValueError: the checkpoint does not match its config (each bad tensor is named).
    """
    folder = checkpoint_folder(path)
    config = BertConfig.from_json(folder / "config.json")
    files = weight_files(folder)
    state = _read_state_dict(files)
    flat, _ = convert_hf_state_dict(state)
    if not flat:
        raise ValueError(
            f"{files[0]} holds no BERT encoder weights (expected names like "
            f"'embeddings.word_embeddings.weight' or 'bert.encoder.layer.0...'); its names "
            f"are {list_first(sorted(state), 5)}"
        )
    # Merged per layer, so an error names the layer ("layer_3/query/kernel"), then stacked.
    expected = traverse_util.flatten_dict(param_shapes(config), sep="/")
    per_layer = {k: v for k, v in expected.items() if not k.startswith("layers/")}
    for name, leaf in expected.items():
        if name.startswith("layers/"):
            for i in range(config.num_hidden_layers):
                per_layer[f"layer_{i}/{name[len('layers/'):]}"] = jax.ShapeDtypeStruct(
                    leaf.shape[1:], leaf.dtype)
    merged = traverse_util.flatten_dict(
        merge_strict(traverse_util.unflatten_dict(per_layer, sep="/"), flat,
                     source=", ".join(str(f) for f in files)), sep="/")
    params = {k: v for k, v in merged.items() if not k.startswith("layer_")}
    for name in expected:
        if name.startswith("layers/"):
            leaf = name[len("layers/"):]
            params[name] = np.stack([merged[f"layer_{i}/{leaf}"]
                                     for i in range(config.num_hidden_layers)])
    return config, traverse_util.unflatten_dict(params, sep="/")


# ----------------------------------------------------------------------------------------------
# Tokenisation


def load_tokenizer(path: str | os.PathLike, *, max_length: int):
    """A `tokenizers.Tokenizer` from a checkpoint folder: tokenizer.json, else vocab.txt.

    The tokenizer adds [CLS]/[SEP], truncates to `max_length` tokens and never pads (batches are
    padded to bucket lengths by the embedder).

    Returns:
        (tokenizer, the files it was built from).
    """
    folder = checkpoint_folder(path)
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    config_file = folder / "tokenizer_config.json"
    if (folder / "tokenizer.json").is_file():
        files = [folder / "tokenizer.json"]
        tokenizer = Tokenizer.from_file(str(files[0]))
    elif (folder / "vocab.txt").is_file():
        files = [folder / "vocab.txt"] + ([config_file] if config_file.is_file() else [])
        options = read_json(config_file) if config_file.is_file() else {}
        if not isinstance(options, dict):
            raise ValueError(f"{config_file} holds no JSON object of tokenizer options.")
        lower = bool(options.get("do_lower_case", True))
        tokenizer = BertWordPieceTokenizer(
            str(files[0]),
            lowercase=lower,
            strip_accents=options.get("strip_accents"),  # None: follow lowercase, as BERT does
            handle_chinese_chars=bool(options.get("tokenize_chinese_chars", True)),
            clean_text=True,
        )._tokenizer
    else:
        raise FileNotFoundError(
            f"no tokenizer in {folder}: expected tokenizer.json, or vocab.txt (with an optional "
            "tokenizer_config.json giving do_lower_case)"
        )
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer, files
