"""The main job: WordNet nouns -> MiniLM embeddings -> the five Table-1 methods -> table + figures.

  make demo
  python -m embaug_jax demo --config=configs/demo.py --workdir=workdir/demo
  python -m embaug_jax demo --config=configs/demo.py:smoke --workdir=/tmp/demo_smoke

Real data, built in: 5,000 WordNet noun synsets of the 24 lexicographer classes with >= 100
synsets (Debian's wordnet-base), each embedded as lemmas | gloss with the shipped
all-MiniLM-L6-v2 through the Flax BERT and the paper's pooling (mean over tokens of the last two
layers): 1,536-d. 10% of the synsets train, so the rarest classes can land no training example
and count as "none" (sec. 2.5); `holdout_classes` forces a few more out of training, so that the
"none" accuracy is measured on a few hundred items in every trial.

The sweep is configs/table1.py (control + four methods over its alpha grid) on 3 trials: 63
members, trained as one compiled program per kind (three). The training length is shortened
from the paper's 576 epochs so the whole job fits in 10 minutes on a 2-core CPU; the
learning-rate cycle is the paper's (3e-4 <-> 3e-3, 12-epoch half cycle).
`--config.train.num_epochs=576` runs the paper's length.
Variants: `smoke` (100 synsets, a few epochs: what the tests run).
"""

import ml_collections

from embaug_jax import configlib

default = configlib.sibling(__file__, "default")
table1 = configlib.sibling(__file__, "table1")
wordnet_minilm = configlib.sibling(__file__, "extract/wordnet_minilm")


def get_config(arg=None):
    args = configlib.parse_arg(arg, smoke=False)
    c = ml_collections.ConfigDict()
    c.extract = wordnet_minilm.get_config("smoke" if args.smoke else None)
    c.train = table1.get_config()
    t = c.train
    t.data.source = "file"  # the path is the extraction's output, filled in by `embaug demo`
    t.data.trials = 3
    t.data.holdout_classes = "2"
    t.num_epochs = 96  # 4 full learning-rate cycles; evaluated every 8, checkpointed every 24
    t.batch_size = 64  # ~500 training rows: 7 updates an epoch
    if args.smoke:
        default.smoke(t)
        t.data.source = "file"
        t.data.trials = 2
        t.data.holdout_classes = "2"
        t.data.train_fraction = 0.5
        t.sweep.alphas = (0.2,)
        t.batch_size = 16
    return c
