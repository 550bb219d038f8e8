"""E-Mixup (sec. 2.2): lambda-weighted averages of two embeddings and of their labels.

  python -m embaug_jax train --config=configs/e_mixup.py --workdir=/tmp/embaug/e_mixup \
      --config.data.path=/path/to/embeddings

Variants as configs/default.py (`:smoke`, `:synthetic`, `trials=N`). The alpha is a starting
point: configs/table1.py searches the grid and reports the best per method, as the paper did.
"""

from configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.sweep.methods = ("e_mixup",)
    c.sweep.alphas = (0.2,)
    return c
