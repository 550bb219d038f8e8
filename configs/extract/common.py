"""Every knob `embaug extract` reads, with its default: `base_config()` (the pipeline and the
embedders) and `source(kind)` (each source kind's knobs); the code reads no default of its own.

Not a config itself: the configs beside it load it and override what their data set needs.
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
    c.text_model.batch_size = 64  # a batch streams batch_size x 64 tokens (rows of 64 tokens)
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
    # XLA CPU devices the CLI splits the host into before JAX starts (0 = one per core, at most
    # 8): each takes its share of a batch's rows. Read only on a CPU; XLA_FLAGS wins.
    c.cpu_devices = 0
    c.output = ""  # "" = <workdir>/embeddings; a path ending in .npz writes one file
    c.overwrite = False  # True: clear a stale output / unfinished shards and redo them
    c.skip_bad_images = False  # True: leave out items with bad images, listed in a report
    c.keep_shards = False  # True: keep workdir/shards after assembly
    c.progress = True  # tqdm progress bars
    return c


def source(kind: str) -> ml_collections.ConfigDict:
    """Every knob of a source kind (`embaug_jax.sources.SOURCE_KINDS`), with its default."""
    c = ml_collections.ConfigDict({"kind": kind})
    if kind == "table":  # a CSV / TSV / JSONL / Parquet file: how users bring their own data
        c.path = ""  # the table file
        c.format = ""  # csv | tsv | jsonl | parquet; "" = from the extension
        # gzip | bz2 | zip | xz | zstd | none; "" = from the extension as pandas infers it
        c.compression = ""  # (items.csv.gz, .jsonl.gz, .tsv.gz, ...)
        c.text_columns = ""  # comma-separated, e.g. "title,description"
        c.image_columns = ""  # comma-separated columns of image paths
        c.label_column = ""  # class names
        c.id_column = ""  # "" = row numbers
        c.missing_labels = "drop"  # drop (counted) | error
        c.empty_texts = "keep"  # keep as "" (counted) | drop | error
        c.encoding = "utf-8"
        c.encoding_errors = "strict"  # strict (error naming the line) | replace
    elif kind == "wordnet":  # Debian's wordnet-base: one item per synset
        c.root = "/usr/share/wordnet"
        c.pos = "n"  # n, v, a, r or several: "n,v"
    elif kind == "fashion_products":  # the Kaggle "Fashion Product Images" folder
        c.root = ""  # styles.csv, styles/<id>.json, images/<id>.jpg
        c.label_column = "articleType"  # or subCategory, masterCategory, gender, ...
        c.images = True
    elif kind == "tfds":  # a TensorFlow Datasets set prepared in ArrayRecord format
        c.name = ""  # e.g. "imdb_reviews"
        c.split = "train"
        c.data_dir = ""  # "" = TFDS's default
        c.text_features = ""  # comma-separated
        c.image_feature = ""
        c.label_feature = "label"
        c.id_feature = ""  # "" = the record index
    elif kind == "fashion_mnist":  # Debian's dataset-fashion-mnist IDX files
        c.root = "/usr/share/datasets/fashion-mnist"
        c.split = "train"  # train (60,000) | test (10,000)
    else:
        raise ValueError(f"unknown source kind {kind!r}.")
    # The sampling every source takes (0 = no limit).
    c.min_class_size = 0  # drop classes with fewer items
    c.per_class = 0  # keep at most this many items per class
    c.max_items = 0  # then at most this many in all, shared evenly over classes
    c.seed = 0  # which items a class keeps
    return c
