"""`TextEmbedder`: texts -> pooled BERT embeddings, from any local Hugging Face BERT checkpoint.

The paper (section 3.2) embeds a phrase by running it through BERT-base, averaging each layer's
output over the phrase's tokens and concatenating the averages of the last two layers
(2 x 768 = 1536 values). `TextEmbedder.from_pretrained(folder).embed(texts)` does exactly that
for any `BertModel` checkpoint folder (BERT-base/large, MiniLM, ...):

    embedder = TextEmbedder.from_pretrained("/models/bert-base-uncased")   # layers=(-2, -1), "mean"
    vectors = embedder.embed(["red cotton shirt", "leather boots"])        # float32 [2, 1536]

Choices worth knowing:
- Mean pooling averages over every non-padding token *including* [CLS] and [SEP], as Hugging Face's
  attention-mask mean and sentence-transformers do (the paper averages "each input token", and
  BERT's input tokens include both). An empty string is still [CLS] [SEP] and embeds normally.
- Layer index 0 is the embedding output, index i the i-th transformer layer, negatives count from
  the last, as in Hugging Face's `output_hidden_states`.
- Batches: texts are truncated to `max_length` tokens, bucketed by length, packed several to a
  row where that pays, and run as a token stream of a fixed number of tokens per batch
  (`bert.packing`): at most `planner.max_programs` compiled programs (two per row length)
  serve any stream of texts, and short texts need two.
- Memory: the embedder calls `util.reuse_freed_memory()` (glibc keeps freed memory), because
  XLA allocates every batch's buffers afresh and would otherwise fault them in each time.
- Weights and tokenizer: read from the folder by `bert.checkpoint` (safetensors preferred, a
  pytorch_model.bin only with `weights_only=True`, merged strictly).
- Devices: each batch is split over `devices` (each device embeds its own rows under
  `shard_map`, weights replicated; the batch size is rounded up to a multiple of the device
  count). The vectors agree with a single device's to float32 rounding (~1e-6), not bit for
  bit: XLA picks its matmul kernels by the per-device shape.
- Parity with Hugging Face's PyTorch `BertModel`: every pooled vector agrees to ~1e-5
  (tests/test_bert.py checks 1e-4).
- bfloat16 (`dtype="bfloat16"`): weights and matmuls in bf16; LayerNorm statistics, attention
  scores, softmax and pooling in float32 (the bf16 matmuls dominate the deviation). Its
  deviation from float32 and its speed are measured in benchmarks/README.md, section "bert".
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from embaug_jax import interrupt
from embaug_jax.embed.bert.checkpoint import (
    checkpoint_folder,
    load_pretrained,
    load_tokenizer,
    weight_files,
)
from embaug_jax.embed.bert.model import (
    CPU_SCORE_BLOCK_BYTES,
    BertConfig,
    BertModel,
    gather_in_bounds,
    score_block_rows,
)
from embaug_jax.embed.bert.packing import BatchPlanner
from embaug_jax.embed.weights import hash_files
from embaug_jax.util import large_dot_compiler_options, on_cpus, reuse_freed_memory

POOLINGS = ("mean", "cls", "max")
# LLVM's optimisation level for the embedder's programs on CPUs (XLA's default: 3). Level 1
# compiled the demo's two MiniLM programs in 0.85x the time and ran as fast, its vectors the
# same bit for bit (long texts' within 7.2e-7; benchmarks/README.md, "Compiles"); level 0
# compiled in about half the time but ran 2.4x slower.
_CPU_LLVM_OPT_LEVEL = 1
# Bump when a change here alters the vectors for the same weights and settings, so caches keyed by
# `TextEmbedder.fingerprint()` are invalidated.
_EMBEDDING_VERSION = "embaug_jax.bert/2"
_BATCHES_PER_CHUNK = 64


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
    the checkpoint files the fingerprint hashes. Its `planner` (`bert.packing.BatchPlanner`)
    lays texts out in the batches the compiled programs take.
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
        # On CPUs attention over long rows runs a few rows at a time, so that the scores stay
        # in cache.
        block_bytes = CPU_SCORE_BLOCK_BYTES if on_cpus(self.devices) else None
        # Max pooling over packed rows would hold [rows, length, slots, hidden] at once.
        self.planner = BatchPlanner(
            max_length=self.max_length, batch_size=self.batch_size, num_devices=n_dev,
            hidden_size=config.hidden_size, pad_token_id=config.pad_token_id,
            pack=bool(pack) and pooling != "max",
            skips_unused_rows=lambda length: score_block_rows(
                config.num_attention_heads, length, block_bytes) is not None)
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
        self.model = BertModel(config, dtype=compute_dtype, score_block_bytes=block_bytes)
        self.params = jax.device_put(
            jax.tree.map(lambda p: jnp.asarray(p, compute_dtype), params),
            NamedSharding(mesh, PartitionSpec()),
        )

        # One compiled program per batch shape (`BatchPlanner.shape`). Each device embeds its
        # own rows (shard_map): nothing crosses devices, and the attention's blocks of rows
        # are blocks of the device's rows.
        batch_spec = PartitionSpec("batch")
        options = large_dot_compiler_options(self.devices)
        if on_cpus(self.devices):
            options = {**(options or {}), "xla_backend_optimization_level": _CPU_LLVM_OPT_LEVEL}
        self.embed_batch = jax.jit(
            jax.shard_map(self.forward, mesh=mesh, in_specs=(PartitionSpec(), *[batch_spec] * 5),
                          out_specs=batch_spec),
            compiler_options=options)

    def forward(self, params, input_ids: jax.Array, position_ids: jax.Array,
                segment_ids: jax.Array, rows: jax.Array, tokens: jax.Array) -> jax.Array:
        """Pooled embeddings of one batch of packed rows (traceable; `embed_batch` jits it).

        The model runs on the batch's token stream (`BertModel`'s `layout`): its dense layers
        see the real tokens only, its attention the padded rows.

        Args (from `BatchPlanner.pack_batch`):
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
        return pool_segments([gather_in_bounds(h, rows) for h in hidden], segment_ids,
                             self.planner.slots(segment_ids.shape[1]), self.layers, self.pooling)

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
            batch_size: a batch streams batch_size x 64 tokens, rows of 64 tokens' worth
                (rounded up to a multiple of the device count).
            devices: devices to shard each batch over; default all local devices.
            pack: pack several short texts into one row (each text's vector stays that of the
                text alone, to float32 rounding); ignored for "max" pooling.
        """
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        folder = checkpoint_folder(path)
        config, params = load_pretrained(folder)
        tokenizer, tokenizer_files = load_tokenizer(folder, max_length=max_length)
        files = [folder / "config.json", *weight_files(folder), *tokenizer_files]
        return cls(config, params, tokenizer, layers=layers, pooling=pooling,
                   max_length=max_length, dtype=dtype, batch_size=batch_size, devices=devices,
                   files=files, pack=pack)

    @property
    def pack(self) -> bool:
        """Whether short texts may share a row (asked for, and not "max" pooling)."""
        return self.planner.pack

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
        it and packed into rows (`BatchPlanner.plan`), so each batch pads little. Batches are
        dispatched without waiting for results; at most two are in flight before the oldest is
        copied back. `on_batch(n)` is called as each batch's n texts are done (a caller's
        progress bar).
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
                interrupt.check()

            for offset in range(0, len(texts), chunk):
                ids = [e.ids for e in self.tokenizer.encode_batch(texts[offset:offset + chunk])]
                for batch in self.planner.plan([len(t) for t in ids]):
                    arrays, slot_of = self.planner.pack_batch(ids, batch)
                    where = offset + np.concatenate([np.asarray(r, np.int64) for r in batch])
                    arrays = jax.device_put(arrays, self._batch_sharding)
                    pending.append((where, slot_of, self.embed_batch(self.params, *arrays)))
                    if len(pending) > 2:
                        collect()
            while pending:
                collect()
        return out


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
