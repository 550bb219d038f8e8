r"""embaug extract --config=configs/extract/table.py --workdir=workdirs/mydata \
  --config.source.path=data.csv --config.source.text_columns=title,description \
  --config.source.label_column=category --config.source.id_column=sku \
  --config.text_model.path=/models/bert-base-uncased

Bring your own data: a CSV / TSV / JSONL / Parquet table of texts (and image paths).

Each text column is one field (embedded separately, concatenated in the given order), each
image column another (paths relative to the table's folder, or absolute; needs
--config.image_model.path). `:smoke` embeds at most 64 rows with the shipped MiniLM (still needs
--config.source.path and the column names).
"""


from embaug_jax import configlib

common = configlib.sibling(__file__, "common")


def get_config(arg=None):
    args = common.parse_arg(arg)
    c = common.base_config()
    c.source = common.source("table")  # path, text_columns, label_column, ...: see common.py
    c.text_model.path = ""  # a Hugging Face BERT folder
    if args.smoke:
        c.source.max_items = 64
        c.text_model.path = "builtin:minilm"
        c.text_model.max_length = 128
        c.text_model.batch_size = 16
        c.shard_size = 32
    return c
