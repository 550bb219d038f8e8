"""Figure 6: Soft E-Stitchup at softness 0.01, 0.05, 0.1, 0.2 against E-Stitchup, alpha 0.3.

  python -m embaug_jax train --config=configs/softness.py --workdir=/tmp/embaug/softness \
      --config.data.path=/path/to/embeddings

The report draws overall (top) and "none" (bottom) accuracy during training per softness.
Variants as configs/default.py (`:smoke`, `:synthetic`, `trials=N`).
"""

from embaug_jax import configlib

default = configlib.sibling(__file__, "default")


def get_config(arg=None):
    configlib.parse_arg(arg, **default.VARIANTS)  # no method= here: the sweep is fixed
    c = default.get_config(arg)
    c.sweep.methods = ("e_stitchup", "soft_e_stitchup")
    c.sweep.alphas = (0.3,)
    c.sweep.softness = (0.01, 0.05, 0.1, 0.2)
    return c
