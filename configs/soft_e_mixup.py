"""Soft E-Mixup (sec. 2.4): E-Mixup with its mixed labels softened by 0.05.

  python -m embaug_jax train --config=configs/soft_e_mixup.py --workdir=/tmp/embaug/soft_e_mixup \
      --config.data.path=/path/to/embeddings

Variants as configs/default.py (`:smoke`, `:synthetic`, `trials=N`). The alpha is a starting
point: configs/table1.py searches the grid and reports the best per method, as the paper did.
"""

from configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.sweep.methods = ("soft_e_mixup",)
    c.sweep.alphas = (0.2,)
    c.sweep.softness = (0.05,)
    return c
