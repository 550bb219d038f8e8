"""embaug extract --config=configs/extract/wordnet_minilm.py --workdir=workdirs/wordnet
embaug extract --config=configs/extract/wordnet_minilm.py:smoke --workdir=/tmp/wn_smoke

The demo's embeddings: WordNet noun synsets embedded with MiniLM, lemmas | gloss.

5,000 synsets of the 24 noun lexicographer classes with >= 100 synsets (noun.Tops and
noun.motive are smaller), about 208 per class. Each synset gives two text fields, its lemma
words ("dog, domestic dog, Canis familiaris") and its gloss, each embedded as the mean over
tokens of MiniLM's last two layers (2 x 384 = 768) -> 1,536-d. `:smoke` embeds ~100 synsets.
Needs Debian's wordnet-base (`sudo apt-get install wordnet-base`).
"""


from embaug_jax import configlib

common = configlib.sibling(__file__, "common")


def get_config(arg=None):
    args = common.parse_arg(arg)
    c = common.base_config()
    c.source = common.source("wordnet")  # nouns from /usr/share/wordnet
    c.source.min_class_size = 100
    c.source.max_items = 5000
    c.fields = "lemmas,gloss"
    c.text_model.path = "builtin:minilm"
    # MiniLM was trained on 256 tokens; every WordNet gloss is shorter.
    c.text_model.max_length = 256
    c.shard_size = 1000
    if args.smoke:
        c.source.max_items = 100
        c.shard_size = 40
        c.text_model.batch_size = 32
    return c
