"""BERT text embeddings in Flax, from any local Hugging Face BERT checkpoint (paper, section 3.2).

The paper embeds a phrase by running it through BERT-base, averaging each layer's output over the
phrase's tokens and concatenating the averages of the last two layers (2 x 768 = 1536 values).
`TextEmbedder.from_pretrained(folder).embed(texts)` does exactly that for any `BertModel`
checkpoint folder (BERT-base/large, MiniLM, ...):

    embedder = TextEmbedder.from_pretrained("/models/bert-base-uncased")   # layers=(-2, -1), "mean"
    vectors = embedder.embed(["red cotton shirt", "leather boots"])        # float32 [2, 1536]

Choices worth knowing:
- Mean pooling averages over every non-padding token *including* [CLS] and [SEP], as Hugging Face's
  attention-mask mean and sentence-transformers do (the paper averages "each input token", and
  BERT's input tokens include both). An empty string is still [CLS] [SEP] and embeds normally.
- Layer index 0 is the embedding output, index i the i-th transformer layer, negatives count from
  the last, as in Hugging Face's `output_hidden_states`.
- Texts longer than `max_length` tokens (default 512, clipped to the checkpoint's
  `max_position_embeddings`) are truncated. Row lengths are bucketed (8, 12, 16, 24, 32, 48,
  ... up to `max_length`) and each bucket has a number of rows per batch (`batch_size` up
  to 64 tokens, proportionally fewer beyond, so a batch holds about `batch_size` x 64 tokens);
  the rows left over from full batches run as power-of-two batches, and a batch is padded only
  to the next power of two of rows, so a few compiled programs per bucket serve any stream of
  texts.
- Token stream: only attention runs on those padded rows. Everything else (the embeddings and
  each layer's dense products, GELU and LayerNorms) runs on the batch's real tokens one after
  another, each device's stream padded to the next 1/32 of its rows' slots; each layer gathers
  q, k and v into the rows and the attention's output back. On long texts that skips most of
  the rows' padding (512 README paragraphs of 50-256 tokens: 8% -> 1%); MiniLM embedded them
  5-9% faster on the 2-core test CPU, for about 0.25 s more compile time per program
  (benchmarks/README.md, "text"). The devices share a batch's rows so that their token counts
  are even.
- Packing (`pack=True`, the default; not for "max" pooling): short texts may share a row of up
  to 32, 64 or 128 tokens, one after another, each with its own [CLS] ... [SEP], positions from
  0 and a block-diagonal attention mask, and are pooled separately. A text's vector is the one
  it gets alone, to float32 rounding (tests compare with Hugging Face's to 1e-4). Each text,
  longest first, goes to the row it fills best. Packing saves the row padding of every text
  but a row's last (which costs attention, not the dense layers: see the token stream) and
  costs attention over longer rows; each chunk of texts is packed only as far as an estimate
  of the compute (`TextEmbedder.plan_cost`) says it pays.
- Memory: the embedder calls `util.reuse_freed_memory()` (glibc keeps freed memory), because
  XLA allocates every batch's buffers afresh and would otherwise fault them in each time.
- Weights: `model.safetensors` (or its sharded index) is read with numpy; `pytorch_model.bin` is
  read with `torch.load(weights_only=True)` only if no safetensors file exists. A "bert." prefix
  (BertFor* checkpoints) is stripped. The pooler and any task head (`cls.*`, `classifier.*`, ...)
  are ignored, as are the `position_ids`/`token_type_ids` buffers; everything under `embeddings.`
  and `encoder.` is merged strictly: a missing, extra or misshapen tensor is a ValueError naming it.
- Devices: each batch is split over `devices` (each device embeds its own rows under
  `shard_map`, weights replicated; the batch size is rounded up to a multiple of the device
  count). The vectors agree with a single device's to float32 rounding (~1e-6), not bit for
  bit: XLA picks its matmul kernels by the per-device shape.
- Parity with Hugging Face's PyTorch `BertModel`: every hidden state at the real tokens and every
  pooled vector agree to ~1e-5 (tests/test_bert.py checks 1e-4). Hidden states at padding
  positions are meaningless in both and are not compared.
- bfloat16 (`dtype="bfloat16"`): weights and matmuls in bf16; LayerNorm statistics, attention
  scores, softmax and pooling in float32 (the bf16 matmuls dominate the deviation). Its
  deviation from float32 and its speed are measured in benchmarks/README.md, section "bert".
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
import os
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from embaug_jax.embed.convert import (
    _read_state_dict,
    _weight_files,
    convert_hf_state_dict,
)
from embaug_jax.embed.weights import (
    hash_files,
    merge_strict,
)
from embaug_jax.util import large_dot_compiler_options, list_first, on_cpus, reuse_freed_memory

POOLINGS = ("mean", "cls", "max")
# Bump when a change here alters the vectors for the same weights and settings, so caches keyed by
# `TextEmbedder.fingerprint()` are invalidated.
_EMBEDDING_VERSION = "embaug_jax.bert/2"
_MIN_BUCKET = 8
_BATCHES_PER_CHUNK = 64
# Short texts may be packed into rows of up to one of these many tokens, at most
# _MAX_TEXTS_PER_ROW per row: a long row costs more attention per token than a short padded
# one (its scores grow with the row length) and saves the padding of every text but the
# row's last; `TextEmbedder.plan` picks whichever costs least.
_PACK_LENGTHS = (32, 64, 128)
_MAX_TEXTS_PER_ROW = 16
# Each device's token stream is padded to a multiple of this fraction of its rows' slots, but
# of at least _STREAM_STEP_MIN tokens (a small batch's stream is its rows' slots, one shape): a
# long-text batch's dense layers then run on about 1% padding instead of the rows' 5-8%, for
# a few more compiled shapes per length bucket (benchmarks/README.md, "text").
_STREAM_STEPS = 32
_STREAM_STEP_MIN = 64
# Batches hold about batch_size * _ROW_TOKENS tokens (see TextEmbedder.rows_per_batch).
_ROW_TOKENS = 64
# On CPUs, attention runs over as many rows at a time as keep their scores within this many
# bytes (one MiniLM row of 256 tokens: 12 heads x 256^2 x 4 B = 3 MiB). On the 2-core test
# machine (1 MiB L2 per core, 32 MiB L3) a MiniLM batch of 16 x 256 tokens ran 11% faster than
# with all rows at once, 24 x 176 9% and 32 x 128 5%; 1, 2 and 6 MiB did no better
# (benchmarks/README.md, "text").
_CPU_SCORE_BLOCK_BYTES = 3 << 20


def _gelu(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU in PyTorch's form, x/2 (1 + erf(x / sqrt 2)). `jax.nn.gelu`'s erfc
    form gives the same values to 1.4e-6 but ran 2.7x slower on XLA:CPU (3.4 against 1.2 ms for
    a MiniLM layer's [2048, 1536] on one core; benchmarks/README.md, "text")."""
    return 0.5 * x * (1 + jax.lax.erf(x * np.asarray(1 / math.sqrt(2), x.dtype)))


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": _gelu,
    "gelu_python": _gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a Hugging Face `config.json` that the encoder needs."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not supported; supported: {sorted(_ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config") -> "BertConfig":
        """Builds the config from a `config.json` dict, rejecting models that are not plain BERT."""
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(
                f"{source}: model_type={model_type!r}; only BERT checkpoints (model_type 'bert') "
                "are supported"
            )
        position_type = d.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"{source}: position_embedding_type={position_type!r}; only 'absolute' is supported"
            )
        if d.get("is_decoder", False):
            raise ValueError(f"{source}: is_decoder=true; only encoder checkpoints are supported")
        if "vocab_size" not in d:
            raise ValueError(f"{source}: no 'vocab_size' entry; is this a BERT config.json?")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: d[k] for k in fields if k in d and d[k] is not None}
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BertConfig":
        """Reads a Hugging Face `config.json`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no BERT config file at {path} (expected a Hugging Face config.json)")
        return cls.from_dict(json.loads(path.read_text()), source=str(path))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ----------------------------------------------------------------------------------------------
# The encoder


class BertEmbeddings(nn.Module):
    """Word + token-type + position embeddings followed by LayerNorm."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids=None):
        cfg = self.config
        embed = lambda n, name: nn.Embed(n, cfg.hidden_size, dtype=self.dtype, name=name)
        positions = (jnp.arange(input_ids.shape[-1])[None, :] if position_ids is None
                     else position_ids)
        # Summed in Hugging Face's order (word + type, then + position) to keep parity tight.
        x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
        x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
        return _layer_norm(cfg, self.dtype, "LayerNorm")(x)


class BertLayer(nn.Module):
    """One post-LayerNorm transformer layer: masked self-attention, then the feed-forward block.

    `score_block_bytes`: when set, attention runs over as many rows at a time as keep their
    float32 scores (heads x length^2 each) within it (see `BertModel`).
    """

    config: BertConfig
    dtype: Any = jnp.float32
    score_block_bytes: int | None = None

    @nn.compact
    def __call__(self, x, attention_mask, layout=None):
        """`x`: [batch, length, hidden], or a token stream [tokens, hidden] with `layout`.
        `attention_mask`: bool [batch, length] (keys to attend to) or [batch, length, length]
        (query x key, e.g. block-diagonal for packed rows).
        `layout` (token streams): (rows [batch, length], the stream index of each row slot's
        token; tokens [tokens], the flat row slot of each stream token), see `BertModel`."""
        cfg = self.config
        dense = lambda features, name: nn.Dense(features, dtype=self.dtype, name=name)
        q, k, v = (dense(cfg.hidden_size, name)(x) for name in ("query", "key", "value"))
        if layout is not None:
            q, k, v = (_gather(y, layout[0]) for y in (q, k, v))
        batch, length, _ = q.shape
        mask = (attention_mask[:, None, None, :] if attention_mask.ndim == 2
                else attention_mask[:, None, :, :])
        attend = lambda q, k, v, mask: _attention(q, k, v, mask, cfg.num_attention_heads,
                                                  self.dtype)
        rows = _rows_per_block(batch, cfg.num_attention_heads, length, self.score_block_bytes)
        if rows < batch:
            # A few rows at a time: their scores stay in the CPU's cache between the two
            # products and the softmax instead of a round trip to memory for each step.
            blocks = lambda y: y.reshape(batch // rows, rows, *y.shape[1:])
            context = jax.lax.map(lambda a: attend(*a), tuple(map(blocks, (q, k, v, mask))))
            context = context.reshape(batch, *context.shape[2:])
        else:
            context = attend(q, k, v, mask)
        if layout is not None:
            context = _gather(context.reshape(batch * length, -1), layout[1])
        x = _layer_norm(cfg, self.dtype, "attention_norm")(
            x + dense(cfg.hidden_size, "attention_output")(context)
        )
        h = _ACTIVATIONS[cfg.hidden_act](dense(cfg.intermediate_size, "intermediate")(x))
        return _layer_norm(cfg, self.dtype, "output_norm")(x + dense(cfg.hidden_size, "output")(h))


def _attention(q, k, v, mask, heads: int, dtype):
    """Softmax attention of q, k, v [rows, length, hidden] split into `heads` heads; `mask`
    (bool, broadcast to [rows, heads, length, length]) marks the keys each query sees.
    Returns the context [rows, length, hidden] in `dtype`."""
    rows, length, hidden = q.shape
    # Head-major [rows, heads, length, head_dim] before the two products: XLA:CPU then runs
    # them as plain batched matmuls instead of transposing inside each.
    q, k, v = (y.reshape(rows, length, heads, hidden // heads).transpose(0, 2, 1, 3)
               for y in (q, k, v))
    # Scores and softmax in float32 even under bf16: the softmax over long rows is where bf16
    # loses the most. Masked keys get the most negative float (as Hugging Face does), so a row
    # of all-padding keys (a padding query) stays finite.
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask, scores / np.float32(math.sqrt(q.shape[-1])),
                       jnp.finfo(jnp.float32).min)
    # The softmax's division waits until after the product with the values: it then divides
    # [length, head_dim] per head instead of [length, length] (2.2x faster attention at 256
    # tokens, benchmarks/README.md, "text").
    weights = jnp.exp(scores - _row_max(scores))
    total = weights.sum(axis=-1, keepdims=True)
    context = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(dtype), v,
                         preferred_element_type=jnp.float32) / total
    return context.astype(dtype).transpose(0, 2, 1, 3).reshape(rows, length, hidden)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
    """x[index] along the first axis, the indices promised in bounds (`TextEmbedder._pack_batch`
    builds them so): no clamping or wrapping of negative indices. XLA:CPU compiled six MiniLM
    long-text programs in 3.8-4.1 s this way, 4.0-4.7 s with numpy-style indexing."""
    return x.at[index].get(mode="promise_in_bounds")


def _row_max(x: jax.Array) -> jax.Array:
    """x.max(axis=-1, keepdims=True), but NaN-blind: a reduction by comparison and select, which
    XLA:CPU vectorises. Its `max` reduction over the last axis, which must propagate NaN, ran at
    0.79 ns an element on the test machine, this at 0.20: a fifth of attention's time at 256
    tokens (benchmarks/README.md, "text"). NaN scores make NaN vectors either way."""
    pick = lambda a, b: jax.lax.select(a > b, a, b)
    return jax.lax.reduce(x, np.array(-np.inf, x.dtype), pick, (x.ndim - 1,))[..., None]


def _rows_per_block(rows: int, heads: int, length: int, block_bytes: int | None) -> int:
    """The most rows, a divisor of `rows`, whose float32 scores fit `block_bytes` (at least
    one row); all `rows` when `block_bytes` is None."""
    if block_bytes is None:
        return rows
    fit = max(1, int(block_bytes) // (4 * heads * length * length))
    return max(d for d in range(1, min(fit, rows) + 1) if rows % d == 0)


def _layer_norm(cfg: BertConfig, dtype, name: str) -> nn.LayerNorm:
    # The two-pass variance matches PyTorch's; the fast E[x^2] - E[x]^2 form drifts by ~1e-5.
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, use_fast_variance=False, name=name)


class BertModel(nn.Module):
    """The BERT encoder; returns every hidden state like Hugging Face's `output_hidden_states`.

    `attention_mask` is [batch, length] (1 = a real token) or [batch, length, length] (which
    keys each query sees); `position_ids` default to 0, 1, ... in every row. A row holding
    several texts (packing) gives each text its own block of the mask and positions from 0.

    `score_block_bytes` (None: all rows at once) makes attention run over blocks of rows whose
    float32 scores fit in that many bytes, one block after another; the embedder sets it on
    CPUs, where scores that stay in cache make long rows faster (`_CPU_SCORE_BLOCK_BYTES`).

    Token stream (`layout` given): `input_ids`, `position_ids` (required) and `token_type_ids`
    are [tokens], the texts' tokens one after another, and everything but attention runs on
    that stream, so no padding goes through the dense layers. Attention runs on padded rows:
    `layout` is (rows, tokens), `rows` int [batch, length] the stream index of each row slot's
    token (anything where the mask hides the slot) and `tokens` int [tokens] the flat row slot
    (row x length + column) of each stream token, both in bounds (not checked: an index out of
    bounds gives undefined values); `attention_mask` is over those rows. Each
    layer gathers q, k and v into the rows and the attention's output back into the stream.
    The hidden states are then [tokens, hidden].

    The layers run under `nn.scan`, so XLA compiles one layer body however deep the model is
    (BERT-base compiles about 3x faster than unrolled, at the same run time). Their parameters
    are stacked under "layers/" with a leading layer axis; `load_pretrained` builds that layout.

    Returns:
        A tuple of `num_hidden_layers + 1` arrays [batch, length, hidden] (a token stream's:
        [tokens, hidden]): the embedding output, then each layer's output.
    """

    config: BertConfig
    dtype: Any = jnp.float32
    score_block_bytes: int | None = None

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 layout=None):
        if layout is not None and position_ids is None:
            raise ValueError("a token stream (layout=...) needs its position_ids: each token's "
                             "position within its text")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        attention_mask = attention_mask.astype(bool)
        x = BertEmbeddings(self.config, self.dtype, name="embeddings")(input_ids, token_type_ids,
                                                                       position_ids)

        def layer_step(layer, carry, mask, layout):
            out = layer(carry, mask, layout)
            return out, out

        layers = nn.scan(layer_step, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=(nn.broadcast, nn.broadcast),
                         length=self.config.num_hidden_layers)
        _, stacked = layers(
            BertLayer(self.config, self.dtype, self.score_block_bytes, name="layers"),
            x, attention_mask, layout)
        return (x, *(stacked[i] for i in range(self.config.num_hidden_layers)))


def load_pretrained(path: str | os.PathLike) -> tuple[BertConfig, dict]:
    """Loads a Hugging Face BERT folder's config and weights as a float32 Flax parameter tree.

    Raises:
        FileNotFoundError: the folder, its config.json or its weights are missing.
        ValueError: the checkpoint does not match its config (each bad tensor is named).
    """
    folder = _checkpoint_folder(path)
    config = BertConfig.from_json(folder / "config.json")
    files = _weight_files(folder)
    state = _read_state_dict(files)
    flat, _ = convert_hf_state_dict(state)
    if not flat:
        raise ValueError(
            f"{files[0]} holds no BERT encoder weights (expected names like "
            f"'embeddings.word_embeddings.weight' or 'bert.encoder.layer.0...'); its names "
            f"are {list_first(sorted(state), 5)}"
        )
    # Merged per layer, so an error names the layer ("layer_3/query/kernel"), then stacked.
    expected = traverse_util.flatten_dict(init_shapes(config), sep="/")
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


def init_shapes(config: BertConfig) -> dict:
    """The parameter tree's shapes and dtypes (jax.ShapeDtypeStruct leaves), without allocating."""
    ids = jnp.zeros((1, 2), jnp.int32)
    variables = jax.eval_shape(BertModel(config).init, jax.random.key(0), ids, ids)
    return variables["params"]


def _checkpoint_folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no checkpoint folder at {folder}: expected a Hugging Face BERT folder with "
            "config.json, model.safetensors (or pytorch_model.bin) and tokenizer.json (or vocab.txt)"
        )
    return folder


# ----------------------------------------------------------------------------------------------
# Tokenisation


def load_tokenizer(path: str | os.PathLike, *, max_length: int):
    """A `tokenizers.Tokenizer` from a checkpoint folder: tokenizer.json, else vocab.txt.

    The tokenizer adds [CLS]/[SEP], truncates to `max_length` tokens and never pads (batches are
    padded to bucket lengths by the embedder).

    Returns:
        (tokenizer, the files it was built from).
    """
    folder = _checkpoint_folder(path)
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    config_file = folder / "tokenizer_config.json"
    if (folder / "tokenizer.json").is_file():
        files = [folder / "tokenizer.json"]
        tokenizer = Tokenizer.from_file(str(files[0]))
    elif (folder / "vocab.txt").is_file():
        files = [folder / "vocab.txt"] + ([config_file] if config_file.is_file() else [])
        options = json.loads(config_file.read_text()) if config_file.is_file() else {}
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


def length_buckets(max_length: int) -> tuple[int, ...]:
    """Padded row lengths: 8, 12, 16, 24, 32, 48, 64 (powers of two and 1.5x between), then
    eighth steps, 72, 80, ..., 128, 144, 160, ...; capped by and ending at max_length.

    The 1.5x steps and the short first buckets cut padding for a few more compiled shapes; from
    64 tokens on, eighth steps cut the padding of long texts (README paragraphs of 87 tokens
    on average: 0.10 padded tokens per real token with quarter steps), for twice the compiled
    shapes (benchmarks/README.md, sections "bert" and "text").
    """
    buckets = []
    n = _MIN_BUCKET
    while n < max_length:
        buckets.append(n)
        if n < 64:
            n = n * 3 // 2 if n & (n - 1) == 0 else n * 4 // 3
        else:
            n += (1 << (n.bit_length() - 1)) // 8
    buckets.append(max_length)
    return tuple(buckets)


# ----------------------------------------------------------------------------------------------
# Pooling


def pool_hidden_states(
    hidden_states: Sequence[jax.Array],
    attention_mask: jax.Array,
    layers: Sequence[int],
    pooling: str,
) -> jax.Array:
    """Pools each chosen layer over its tokens, concatenated: float32 [batch, len(layers) * hidden].

    "mean" averages over non-padding tokens ([CLS] and [SEP] included), "max" takes the maximum
    over them, "cls" takes the first token.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    mask = attention_mask.astype(bool)[..., None]
    pooled = []
    for layer in layers:
        h = hidden_states[layer].astype(jnp.float32)
        if pooling == "mean":
            count = jnp.maximum(mask.sum(axis=1), 1).astype(jnp.float32)
            pooled.append(jnp.where(mask, h, 0.0).sum(axis=1) / count)
        elif pooling == "max":
            pooled.append(jnp.where(mask, h, -jnp.inf).max(axis=1))
        else:
            pooled.append(h[:, 0])
    return jnp.concatenate(pooled, axis=-1)


def pool_segments(
    hidden_states: Sequence[jax.Array],
    segment_ids: jax.Array,
    slots: int,
    layers: Sequence[int],
    pooling: str,
) -> jax.Array:
    """Pools each text of packed rows: float32 [batch, slots, len(layers) * hidden].

    `segment_ids` [batch, length] numbers the texts of a row 1, 2, ... (0 = padding); slot j
    holds text j + 1 (zeros where a row has fewer texts). Pooling as in `pool_hidden_states`,
    per text: "mean" over its tokens, "max" over them, "cls" its first token.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    member = segment_ids[..., None] == jnp.arange(1, slots + 1)  # [batch, length, slots]
    weights = member.astype(jnp.float32)
    if pooling == "mean":
        weights = weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    elif pooling == "cls":  # the first token of each text
        weights = weights * (jnp.cumsum(weights, axis=1) == 1)
    pooled = []
    for layer in layers:
        h = hidden_states[layer].astype(jnp.float32)
        if pooling == "max":
            masked = jnp.where(member[..., None], h[:, :, None, :], -jnp.inf)
            pooled.append(jnp.where(member.any(axis=1)[..., None], masked.max(axis=1), 0.0))
        else:
            # HIGHEST: an exact float32 weighted sum, as the reference's masked mean is.
            pooled.append(jnp.einsum("bls,blh->bsh", weights, h,
                                     precision=jax.lax.Precision.HIGHEST))
    return jnp.concatenate(pooled, axis=-1)


def normalize_layers(layers: Sequence[int], num_hidden_layers: int) -> tuple[int, ...]:
    """Turns layer indices (0 = embedding output, negatives from the last) into non-negative ones."""
    if isinstance(layers, (int, np.integer)):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers is empty; give at least one hidden-state index, e.g. (-2, -1)")
    count = num_hidden_layers + 1
    out = []
    for layer in layers:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise ValueError(f"layer indices must be ints, got {layer!r}")
        if not -count <= layer < count:
            raise ValueError(
                f"layer {layer} out of range: this model has {count} hidden states (0 = embedding "
                f"output, 1..{num_hidden_layers} = transformer layers), so use -{count}..{count - 1}"
            )
        out.append(int(layer) % count)
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# The embedder


class TextEmbedder:
    """Turns texts into pooled BERT embeddings with a few compiled shapes, sharded over devices.

    Build it with `from_pretrained`; the constructor takes an already loaded config, float32
    parameter tree and tokenizer (to reuse one loaded model under other settings), and `files`,
    the checkpoint files the fingerprint hashes.
    """

    def __init__(
        self,
        config: BertConfig,
        params,
        tokenizer,
        *,
        layers: Sequence[int] = (-2, -1),
        pooling: str = "mean",
        max_length: int = 512,
        dtype: str = "float32",
        batch_size: int = 64,
        devices: Sequence[jax.Device] | None = None,
        files: Sequence[Path] = (),
        pack: bool = True,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        reuse_freed_memory()  # per-batch buffers: reused pages, not fresh page faults
        self.config = config
        self.layers = normalize_layers(layers, config.num_hidden_layers)
        self.pooling = pooling
        self.max_length = min(int(max_length), config.max_position_embeddings)
        self.dtype = dtype
        self.devices = list(devices) if devices is not None else jax.local_devices()
        if not self.devices:
            raise ValueError("devices is empty")
        n_dev = len(self.devices)
        # Every batch must split evenly over the devices.
        self.batch_size = -(-int(batch_size) // n_dev) * n_dev
        self.buckets = length_buckets(self.max_length)
        # Max pooling over packed rows would hold [rows, length, slots, hidden] at once.
        self.pack = bool(pack) and pooling != "max"
        # A private copy: truncation is tokenizer state, and embedders may share one tokenizer.
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        # Hashed now, so the fingerprint describes the files as loaded even if they change later.
        self._files_digest = hash_files(files) if files else None

        mesh = Mesh(np.asarray(self.devices), ("batch",))
        self._batch_sharding = NamedSharding(mesh, PartitionSpec("batch"))
        compute_dtype = jnp.dtype(dtype)
        # On CPUs attention runs a few rows at a time, so that the scores stay in cache.
        self.model = BertModel(config, dtype=compute_dtype, score_block_bytes=(
            _CPU_SCORE_BLOCK_BYTES if on_cpus(self.devices) else None))
        self.params = jax.device_put(
            jax.tree.map(lambda p: jnp.asarray(p, compute_dtype), params),
            NamedSharding(mesh, PartitionSpec()),
        )

        # One compiled program per bucket length and power-of-two row count. Each device embeds
        # its own rows (shard_map): nothing crosses devices, and the attention's blocks of
        # rows are blocks of the device's rows.
        batch_spec = PartitionSpec("batch")
        self.embed_batch = jax.jit(
            jax.shard_map(self.forward, mesh=mesh, in_specs=(PartitionSpec(), *[batch_spec] * 5),
                          out_specs=batch_spec),
            compiler_options=large_dot_compiler_options(self.devices))

    def forward(self, params, input_ids: jax.Array, position_ids: jax.Array,
                segment_ids: jax.Array, rows: jax.Array, tokens: jax.Array) -> jax.Array:
        """Pooled embeddings of one batch of packed rows (traceable; `embed_batch` jits it).

        The model runs on the batch's token stream (`BertModel`'s `layout`): its dense layers
        see the real tokens only, its attention the padded rows.

        Args (from `_pack_batch`):
            input_ids, position_ids: int32 [stream]: the tokens of the rows' texts one after
                another, and each token's position within its text.
            segment_ids: int32 [rows, length]: the text each row slot holds (1, 2, ... within
                the row; 0 = padding).
            rows: int32 [rows, length]: the stream index of each row slot's token.
            tokens: int32 [stream]: the flat row slot of each stream token.

        Returns:
            float32 [rows, slots, dim]: slot j of a row is the embedding of its text j + 1.
        """
        # Block-diagonal: a token sees only the tokens of its own text, so a packed text gets
        # exactly the hidden states it would get alone.
        mask = ((segment_ids[:, :, None] == segment_ids[:, None, :])
                & (segment_ids[:, None, :] > 0))
        hidden = self.model.apply({"params": params}, input_ids, mask,
                                  position_ids=position_ids, layout=(rows, tokens))
        # Pooled in the rows' layout (XLA drops the gathers of layers not pooled).
        return pool_segments([_gather(h, rows) for h in hidden], segment_ids,
                             self.slots(segment_ids.shape[1]), self.layers, self.pooling)

    def slots(self, length: int) -> int:
        """How many texts a row of `length` tokens may hold (each text has >= 2 tokens)."""
        return max(1, min(length // 2, _MAX_TEXTS_PER_ROW)) if self.pack else 1

    def rows_per_batch(self, length: int) -> int:
        """Rows of a batch of `length`-token rows: `batch_size` up to _ROW_TOKENS tokens, fewer
        beyond, so a batch holds about batch_size * _ROW_TOKENS tokens whatever its length.

        Long rows in full-size batches make XLA's per-call buffers (attention scores alone:
        rows x heads x length^2 floats) so large that the allocator maps fresh pages for them on
        every call: page faults and system time instead of work.
        """
        n_dev = len(self.devices)
        rows = max(1, min(self.batch_size, self.batch_size * _ROW_TOKENS // length))
        return -(-rows // n_dev) * n_dev

    def padded_rows(self, length: int, rows: int) -> int:
        """Rows a batch of `rows` rows of `length` tokens is padded to: the next power of two
        (at least the device count, a multiple of it), at most `rows_per_batch(length)`.

        A short batch (the last of a chunk, or a small call) then pays for at most twice its
        rows instead of a full batch, for at most log2(batch_size) more compiled shapes per
        bucket (benchmarks/README.md, section "text").
        """
        n_dev = len(self.devices)
        full = self.rows_per_batch(length)
        padded = max(n_dev, 1 << max(0, int(rows) - 1).bit_length())
        return min(full, -(-padded // n_dev) * n_dev)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        layers: Sequence[int] = (-2, -1),
        pooling: str = "mean",
        max_length: int = 512,
        dtype: str = "float32",
        batch_size: int = 64,
        devices: Sequence[jax.Device] | None = None,
        pack: bool = True,
    ) -> "TextEmbedder":
        """Loads a local Hugging Face BERT folder (config.json, weights, tokenizer files).

        Args:
            path: the checkpoint folder.
            layers: hidden-state indices pooled and concatenated (default: the last two, as in the
                paper); 0 is the embedding output.
            pooling: "mean" (over non-padding tokens, [CLS]/[SEP] included), "cls" or "max".
            max_length: truncation length in tokens, clipped to max_position_embeddings.
            dtype: "float32", or "bfloat16" for faster, slightly deviating inference.
            batch_size: rows per compiled batch (rounded up to a multiple of the device count).
            devices: devices to shard each batch over; default all local devices.
            pack: pack several short texts into one row (each text's vector stays that of the
                text alone, to float32 rounding); ignored for "max" pooling.
        """
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        folder = _checkpoint_folder(path)
        config, params = load_pretrained(folder)
        tokenizer, tokenizer_files = load_tokenizer(folder, max_length=max_length)
        files = [folder / "config.json", *_weight_files(folder), *tokenizer_files]
        return cls(config, params, tokenizer, layers=layers, pooling=pooling,
                   max_length=max_length, dtype=dtype, batch_size=batch_size, devices=devices,
                   files=files, pack=pack)

    @property
    def dim(self) -> int:
        """Length of each embedding: len(layers) * hidden_size."""
        return len(self.layers) * self.config.hidden_size

    def settings(self) -> dict:
        """Everything besides the files that decides the output vectors."""
        return {"version": _EMBEDDING_VERSION, "layers": list(self.layers), "pooling": self.pooling,
                "max_length": self.max_length, "dtype": self.dtype}

    def fingerprint(self) -> str:
        """sha256 over the weights, tokenizer files, config.json and the pooling settings."""
        if self._files_digest is None:
            raise ValueError("fingerprint() needs an embedder made by TextEmbedder.from_pretrained")
        h = hashlib.sha256(self._files_digest.encode())
        h.update(json.dumps(self.settings(), sort_keys=True).encode())
        return h.hexdigest()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, [CLS] ... [SEP], truncated to max_length."""
        texts = _check_texts(texts)
        return [e.ids for e in self.tokenizer.encode_batch(texts)] if texts else []

    def embed(self, texts: Sequence[str], *, progress: bool = False,
              on_batch: Callable[[int], Any] | None = None) -> np.ndarray:
        """Embeds texts; returns float32 [len(texts), dim] in the order given.

        Texts are tokenised a chunk at a time (bounded memory), sorted by token length within
        it and packed into rows (`plan_rows`), so each batch pads little. Batches are dispatched
        without waiting for results; at most two are in flight before the oldest is copied
        back. `on_batch(n)` is called as each batch's n texts are done (a caller's progress bar).
        """
        from tqdm.auto import tqdm

        texts = _check_texts(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        chunk = self.batch_size * _BATCHES_PER_CHUNK
        pending: deque = deque()
        with tqdm(total=len(texts), desc="embed texts", unit="text", disable=not progress) as bar:
            def collect():
                where, slot_of, result = pending.popleft()
                out[where] = np.asarray(result)[slot_of]
                bar.update(len(where))
                if on_batch is not None:
                    on_batch(len(where))

            for offset in range(0, len(texts), chunk):
                ids = [e.ids for e in self.tokenizer.encode_batch(texts[offset:offset + chunk])]
                for rows in self.plan([len(t) for t in ids]):
                    arrays, slot_of = self._pack_batch(ids, rows)
                    batch = jax.device_put(arrays, self._batch_sharding)
                    where = offset + np.concatenate([np.asarray(r, np.int64) for r in rows])
                    pending.append((where, slot_of, self.embed_batch(self.params, *batch)))
                    if len(pending) > 2:
                        collect()
            while pending:
                collect()
        return out

    def plan(self, lengths: Sequence[int]) -> list[list[list[int]]]:
        """The batches `embed` runs for texts of these token lengths: the cheapest (by
        `plan_cost`) of one text per row and packing into rows of each of _PACK_LENGTHS."""
        plans = [self.plan_batches(lengths, pack_length=0)]
        if self.pack:
            plans += [self.plan_batches(lengths, pack_length=n) for n in _PACK_LENGTHS
                      if n <= self.max_length]
        return min(plans, key=lambda batches: self.plan_cost(batches, lengths))  # first if tied

    def plan_cost(self, batches: list[list[list[int]]], lengths: Sequence[int]) -> float:
        """Estimated time of `batches`: per padded row slot, the dense layers (12 hidden^2
        multiply-adds) plus attention over the row, in units of hidden multiply-adds. Attention
        was timed on MiniLM (rows of 64 and 256 tokens, with and without it): about
        2 x hidden (its layout changes and masking) + 4 x length (its products and softmax).

        The dense layers run on the token stream, not on the padded rows, so this overcharges
        padding, and packing wins more often than the compute alone would say. That is kept
        on purpose: packed plans make fewer, fuller batches and fewer programs to compile. The
        demo's extraction (10,000 short texts) took 32.0 s this way and 40.4 s with the
        dense layers charged per real token, which ran 4,096 glosses 4.5% faster once
        compiled (benchmarks/README.md, "text", session 5)."""
        hidden = self.config.hidden_size
        cost = 0.0
        for batch in batches:
            length = self.bucket(max(sum(lengths[i] for i in row) for row in batch))
            cost += self.padded_rows(length, len(batch)) * length * (14 * hidden + 4 * length)
        return cost

    def plan_batches(self, lengths: Sequence[int], *, pack_length: int = 0
                     ) -> list[list[list[int]]]:
        """Groups texts of the given token lengths into batches of rows of texts.

        Texts are packed, longest first and each into the row it fills best, into rows of up
        to `pack_length` tokens and `slots` texts (a longer text gets a row of its own); with
        `pack_length=0` each text is a row. Rows, fullest first, fill batches of
        `rows_per_batch(bucket)` rows; the rows left over run in power-of-two batches.

        Returns:
            batches, each a list of rows, each a list of indices into `lengths`.
        """
        lengths = np.asarray(lengths, np.int64)
        capacity = min(int(pack_length), self.max_length)
        most = self.slots(capacity) if capacity else 1
        # Best fit, longest first: each text goes to the open row it leaves least room in.
        # Next fit (shortest first, a new row when one is full) padded WordNet glosses in rows
        # of 64 with 0.23 tokens per real token; best fit with 0.01 (benchmarks/README.md).
        rows: list[list[int]] = []
        fills: list[int] = []
        room: list[tuple[int, int]] = []  # (free tokens, row) of the rows that take more texts
        for i in np.argsort(-lengths, kind="stable").tolist():
            n = int(lengths[i])
            at = bisect.bisect_left(room, (n, -1)) if n <= capacity else len(room)
            if at < len(room):
                free, r = room.pop(at)
                rows[r].append(i)
                fills[r] += n
            else:
                free, r = capacity, len(rows)
                rows.append([i])
                fills.append(n)
            if free - n >= 2 and len(rows[r]) < most:  # a text has at least [CLS] and [SEP]
                bisect.insort(room, (free - n, r))
        # Fullest rows first: each batch takes as many rows as its longest row's bucket allows,
        # so at a bucket boundary shorter rows pad up rather than a batch running short of
        # rows. The rows left at the end run as power-of-two batches instead of one batch
        # padded up to the next power of two: 40 rows run as 32 + 8, not as 64.
        order = np.argsort(fills, kind="stable")[::-1]
        batches, start = [], 0
        n_dev = len(self.devices)
        while start < len(order):
            limit = self.rows_per_batch(self.bucket(fills[order[start]]))
            left = len(order) - start
            take = limit if left >= limit else max(1 << (left.bit_length() - 1), min(left, n_dev))
            batches.append([rows[i] for i in order[start:start + take]])
            start += take
        return batches

    def bucket(self, tokens: int) -> int:
        """The padded length of a row of `tokens` tokens."""
        return next(b for b in self.buckets if b >= tokens)

    def _pack_batch(self, ids: list[list[int]], rows: list[list[int]]):
        """The arrays `forward` takes for `rows` (lists of indices into `ids`), and where each
        text's vector lands: the flat index into the [rows, slots] output, in the order the
        rows list the texts.

        The rows are padded to their bucket and to `padded_rows` rows, and shared out between
        the devices, each a block of rows: the fullest row first, each to the device with the
        fewest tokens so far. Each device's stream holds its rows' tokens, padded to a length
        common to the devices, rounded up to a 1/_STREAM_STEPS step of a device's row slots
        (at least _STREAM_STEP_MIN tokens, at most all the slots).
        """
        n_dev = len(self.devices)
        fills = [sum(len(ids[i]) for i in row) for row in rows]
        length = self.bucket(max(fills))
        per_device = self.padded_rows(length, len(rows)) // n_dev
        placed: list[list[int]] = [[] for _ in range(n_dev)]
        totals = [0] * n_dev
        for r in sorted(range(len(rows)), key=lambda r: -fills[r]):
            d = min((d for d in range(n_dev) if len(placed[d]) < per_device),
                    key=totals.__getitem__)
            placed[d].append(r)
            totals[d] += fills[r]
        slots = per_device * length
        step = min(slots, max(_STREAM_STEP_MIN, slots // _STREAM_STEPS))
        stream = min(slots, -(-max(max(totals), 1) // step) * step)

        shape = (n_dev * per_device, length)
        segment_ids = np.zeros(shape, np.int32)
        row_index = np.zeros(shape, np.int32)
        input_ids = np.full(n_dev * stream, self.config.pad_token_id, np.int32)
        position_ids = np.zeros(n_dev * stream, np.int32)
        tokens = np.zeros(n_dev * stream, np.int32)
        row_at = np.zeros(len(rows), np.int64)
        for d, device_rows in enumerate(placed):
            at = 0  # within the device's stream
            for k, r in enumerate(device_rows):
                row_at[r] = d * per_device + k
                column = 0
                for j, i in enumerate(rows[r]):
                    n = len(ids[i])
                    where = slice(d * stream + at, d * stream + at + n)
                    input_ids[where] = ids[i]
                    position_ids[where] = np.arange(n)
                    tokens[where] = k * length + column + np.arange(n)
                    segment_ids[row_at[r], column:column + n] = j + 1
                    row_index[row_at[r], column:column + n] = at + np.arange(n)
                    column += n
                    at += n
        slot_row = np.concatenate([np.full(len(row), row_at[r]) for r, row in enumerate(rows)])
        slot = np.concatenate([np.arange(len(row)) for row in rows])
        return (input_ids, position_ids, segment_ids, row_index, tokens), (slot_row, slot)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise ValueError("texts must be a sequence of str, got a single string; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise ValueError(f"texts must be a sequence of str, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(
                f"texts[{i}] is {type(t).__name__} ({t!r:.40}), not str; convert or drop it first"
            )
    return texts
