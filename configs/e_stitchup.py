"""E-Stitchup (sec. 2.3): each coordinate from one of two embeddings, chosen w.p. lambda.

  python -m embaug_jax train --config=configs/e_stitchup.py --workdir=/tmp/embaug/e_stitchup \
      --config.data.path=/path/to/embeddings

Variants as configs/default.py (`:smoke`, `:synthetic`, `trials=N`). The alpha is a starting
point: configs/table1.py searches the grid and reports the best per method, as the paper did.
"""

from configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.sweep.methods = ("e_stitchup",)
    c.sweep.alphas = (0.2,)
    return c
