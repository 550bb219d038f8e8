"""The BERT encoder in Flax Linen: `BertConfig` and `BertModel`, with Hugging Face's numerics.

`BertModel` returns every hidden state, as Hugging Face's `output_hidden_states` does. Parity
with Hugging Face's PyTorch `BertModel`: every hidden state at the real tokens agrees to ~1e-5
(tests/test_bert.py checks 1e-4). Hidden states at padding positions are meaningless in both and
are not compared.

Besides padded rows [batch, length], the model runs on a token stream: the texts' tokens one
after another, so that everything but attention (the embeddings and each layer's dense products,
GELU and LayerNorms) sees the real tokens only, and each layer gathers q, k and v into padded
rows for attention and its output back (see `BertModel`). Rows may hold several texts, each with
its own block of the attention mask and positions from 0 (packing, see `bert.packing`).

bfloat16 (`dtype=jnp.bfloat16`): weights and matmuls in bf16; LayerNorm statistics, attention
scores and softmax in float32 (the bf16 matmuls dominate the deviation, measured in
benchmarks/README.md, section "bert").
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax.util import read_json

# On CPUs, attention runs over as many rows at a time as keep their scores within this many
# bytes (one MiniLM row of 256 tokens: 12 heads x 256^2 x 4 B = 3 MiB). On the 2-core test
# machine (1 MiB L2 per core, 32 MiB L3) a MiniLM batch of 16 x 256 tokens ran 11% faster than
# with all rows at once, 24 x 176 9% and 32 x 128 5%; 1, 2 and 6 MiB did no better
# (benchmarks/README.md, "text").
CPU_SCORE_BLOCK_BYTES = 3 << 20
# Blocks pay only for rows long enough that a block holds a few. All rows at once compiled
# 0.1-0.2 s sooner; rows of 64 tokens (the demo's packed rows) ran as fast or faster at once
# (0.88-0.99x), rows of 72-96 tokens within 8% either way, rows of 128-256 tokens 1.04-1.38x
# slower than in blocks of four down to one (benchmarks/compile_bench.py; benchmarks/README.md,
# "Compiles"). The cut: blocks where at most 8 rows fit one (MiniLM and BERT-base: rows of 88
# tokens and more).
_MAX_BLOCK_ROWS = 8


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
        config = read_json(path)
        if not isinstance(config, dict):
            raise ValueError(f"{path} holds a JSON {type(config).__name__}, not the object of "
                             "a Hugging Face config.json.")
        return cls.from_dict(config, source=str(path))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


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

    `score_block_bytes`: when set, attention over long rows runs over as many rows at a time as
    keep their float32 scores (heads x length^2 each) within it, skipping blocks whose rows have
    no key to attend to (`score_block_rows`; see `BertModel`).
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
            q, k, v = (gather_in_bounds(y, layout[0]) for y in (q, k, v))
        batch, length, _ = q.shape
        mask = (attention_mask[:, None, None, :] if attention_mask.ndim == 2
                else attention_mask[:, None, :, :])
        attend = lambda q, k, v, mask: _attention(q, k, v, mask, cfg.num_attention_heads,
                                                  self.dtype)
        rows = _rows_per_block(batch, cfg.num_attention_heads, length, self.score_block_bytes)
        if rows < batch:
            # A few rows at a time: their scores stay in the CPU's cache between the two
            # products and the softmax instead of a round trip to memory for each step. A
            # block of unused rows (no key to attend to: a batch's spare rows) is skipped.
            def block(a):
                q, k, v, mask = a
                return jax.lax.cond(mask.any(), attend, lambda q, *_: jnp.zeros_like(q),
                                    q, k, v, mask)

            blocks = lambda y: y.reshape(batch // rows, rows, *y.shape[1:])
            context = jax.lax.map(block, tuple(map(blocks, (q, k, v, mask))))
            context = context.reshape(batch, *context.shape[2:])
        else:
            context = attend(q, k, v, mask)
        if layout is not None:
            context = gather_in_bounds(context.reshape(batch * length, -1), layout[1])
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


def gather_in_bounds(x: jax.Array, index: jax.Array) -> jax.Array:
    """x[index] along the first axis, the indices promised in bounds (`BatchPlanner.pack_batch`
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


def score_block_rows(heads: int, length: int, block_bytes: int | None) -> int | None:
    """How many rows of `length` tokens attention takes at a time: as many as keep their float32
    scores within `block_bytes` (at least one), or None (all rows at once) when `block_bytes`
    is None or a block would hold more than `_MAX_BLOCK_ROWS` rows."""
    if block_bytes is None:
        return None
    fit = max(1, int(block_bytes) // (4 * heads * length * length))
    return fit if fit <= _MAX_BLOCK_ROWS else None


def _rows_per_block(rows: int, heads: int, length: int, block_bytes: int | None) -> int:
    """The rows of a block (`score_block_rows`), cut to a divisor of `rows`; all `rows` when
    attention takes them at once."""
    fit = score_block_rows(heads, length, block_bytes)
    if fit is None:
        return rows
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
    float32 scores fit in that many bytes, one block after another, where a block holds at most
    eight rows (`score_block_rows`); the embedder sets it on CPUs, where scores that stay in
    cache make long rows faster (`CPU_SCORE_BLOCK_BYTES`). A block of rows that attend to
    nothing (all keys masked: rows a batch leaves unused) is skipped; its outputs are zeros,
    where all-masked rows otherwise get the mean of their values (meaningless either way, like
    every padding position).

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
    are stacked under "layers/" with a leading layer axis; `bert.checkpoint.load_pretrained`
    builds that layout.

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


def param_shapes(config: BertConfig) -> dict:
    """The parameter tree `BertModel(config).init` makes, as float32 jax.ShapeDtypeStruct
    leaves, from the config alone.

    Written out rather than traced: tracing the model's init took 0.25 s, a tenth of the demo
    extraction's compile time (tests/test_bert.py checks that the two trees agree).
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    leaf = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    dense = lambda n_in, n_out: {"kernel": leaf(layers, n_in, n_out), "bias": leaf(layers, n_out)}
    norm = {"scale": leaf(layers, hidden), "bias": leaf(layers, hidden)}
    embed = lambda n: {"embedding": leaf(n, hidden)}
    return {
        "embeddings": {
            "word_embeddings": embed(config.vocab_size),
            "token_type_embeddings": embed(config.type_vocab_size),
            "position_embeddings": embed(config.max_position_embeddings),
            "LayerNorm": {"scale": leaf(hidden), "bias": leaf(hidden)},
        },
        "layers": {
            "query": dense(hidden, hidden), "key": dense(hidden, hidden),
            "value": dense(hidden, hidden), "attention_output": dense(hidden, hidden),
            "attention_norm": norm, "intermediate": dense(hidden, config.intermediate_size),
            "output": dense(config.intermediate_size, hidden), "output_norm": norm,
        },
    }
