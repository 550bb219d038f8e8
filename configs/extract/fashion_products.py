r"""embaug extract --config=configs/extract/fashion_products.py --workdir=workdirs/fashion \
  --config.source.root=/data/fashion-dataset \
  --config.text_model.path=/models/bert-base-uncased \
  --config.image_model.path=/models/efficientnetb4_notop.h5

The paper's set-up (section 3.2): Fashion Product Images, BERT-base on title and description
plus EfficientNet-B4 on the image = 1,536 + 1,536 + 1,792 = 4,864-d.

`source.root` is the Kaggle "Fashion Product Images" folder (styles.csv, styles/<id>.json,
images/<id>.jpg). `text_model.path` is a Hugging Face BERT-base folder; `image_model.path` is
EfficientNet-B4 weights: a Keras `.h5`, a PyTorch / timm checkpoint (set image_model.origin) or
a file from `embaug convert`. Items whose image is missing or corrupt are an error listing them
all; `--config.skip_bad_images=True` leaves them out (listed in skipped_images.json).

`:smoke` runs the same pipeline on at most 12 items with the small shipped models instead
(MiniLM for text, Lite0 for images); it still needs `--config.source.root`.
"""


from embaug_jax import configlib

common = configlib.sibling(__file__, "common")


def get_config(arg=None):
    args = common.parse_arg(arg)
    c = common.base_config()
    c.source = common.source("fashion_products")  # root: the Kaggle folder
    c.fields = "title,description,image"
    c.text_model.path = ""  # a BERT-base folder (paper: last two layers, mean pooled)
    c.text_model.layers = (-2, -1)
    c.image_model.path = ""  # EfficientNet-B4 weights
    c.image_model.variant = "b4"
    c.image_model.batch_size = 16
    c.shard_size = 512
    if args.smoke:
        c.source.max_items = 12
        c.text_model.path = "builtin:minilm"
        c.text_model.max_length = 128
        c.text_model.batch_size = 8
        c.image_model.path = "builtin:lite0"
        c.image_model.variant = "lite0"
        c.image_model.batch_size = 4
        c.shard_size = 8
    return c
