"""Control: every setting identical to the other methods, no augmentation (sec. 3).

  python -m embaug_jax train --config=configs/control.py --workdir=/tmp/embaug/control \
      --config.data.path=/path/to/embeddings

Variants as configs/default.py (`:smoke`, `:synthetic`, `trials=N`).
"""

from configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.sweep.methods = ("control",)
    return c
