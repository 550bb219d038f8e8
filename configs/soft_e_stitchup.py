"""Soft E-Stitchup (sec. 2.4): E-Stitchup, labels softened by 0.05 (the paper's best).

  python -m embaug_jax train --config=configs/soft_e_stitchup.py \
      --workdir=/tmp/embaug/soft_e_stitchup --config.data.path=/path/to/embeddings

Variants as configs/default.py (`:smoke`, `:synthetic`, `trials=N`). The alpha is a starting
point: configs/table1.py searches the grid and reports the best per method, as the paper did.
"""

from configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.sweep.methods = ("soft_e_stitchup",)
    c.sweep.alphas = (0.2,)
    c.sweep.softness = (0.05,)
    return c
