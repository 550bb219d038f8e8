"""Knobs shared by every extract config: `base_config()` and the `arg` string parser.

Not a config itself: the four configs beside it import it and fill in their source and models.
"""

from __future__ import annotations

import ml_collections

from embaug_jax import configlib


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """"smoke,variant=b4" -> {smoke: True, variant: "b4"}: `configlib.parse_arg` with `smoke`."""
    return configlib.parse_arg(arg, smoke=False, **defaults)


def base_config() -> ml_collections.ConfigDict:
    """Every pipeline knob except the source's, with its default."""
    c = ml_collections.ConfigDict()
    # Fields to embed, comma-separated, in the output's order ("" = all of the source's fields);
    # text fields always come before image fields in the concatenation.
    c.fields = ""
    c.text_model = ml_collections.ConfigDict()
    # A Hugging Face BERT folder (config.json, model.safetensors or pytorch_model.bin, tokenizer
    # files), or builtin:minilm for the shipped all-MiniLM-L6-v2.
    c.text_model.path = ""
    c.text_model.layers = (-2, -1)  # hidden states pooled and concatenated (paper: last two)
    c.text_model.pooling = "mean"  # "mean" (over non-padding tokens), "cls" or "max"
    c.text_model.max_length = 512  # truncation, in tokens
    c.text_model.dtype = "float32"  # or "bfloat16" (faster, small deviation)
    c.text_model.batch_size = 64
    c.image_model = ml_collections.ConfigDict()
    # Converted EfficientNet weights (safetensors from `embaug convert`), a Keras .h5 / PyTorch
    # .pth checkpoint, or builtin:lite0 for the shipped ImageNet EfficientNet-Lite0.
    c.image_model.path = ""
    c.image_model.variant = "b4"  # b0..b7 or lite0
    c.image_model.origin = ""  # keras | pytorch | timm; "" = read from converted weights
    c.image_model.dtype = "float32"
    c.image_model.batch_size = 16
    c.shard_size = 1024  # items per resumable shard
    c.num_devices = 0  # devices each batch is sharded over; 0 = all local devices
    c.output = ""  # "" = <workdir>/embeddings; a path ending in .npz writes one file
    c.overwrite = False  # True: clear a stale output / unfinished shards and redo them
    c.skip_bad_images = False  # True: leave out items with bad images, listed in a report
    c.keep_shards = False  # True: keep workdir/shards after assembly
    c.progress = True  # tqdm progress bars
    return c


def sampling(source: ml_collections.ConfigDict, *, min_class_size: int = 0, per_class: int = 0,
             max_items: int = 0, seed: int = 0) -> None:
    """Adds the sampling knobs every source takes (0 = no limit)."""
    source.min_class_size = min_class_size  # drop classes with fewer items
    source.per_class = per_class  # keep at most this many items per class
    source.max_items = max_items  # then at most this many in all, shared evenly over classes
    source.seed = seed  # which items a class keeps
