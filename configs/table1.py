"""Table 1: the control and the four methods, each over an alpha grid, over 5 random splits.

  python -m embaug_jax train --config=configs/table1.py --workdir=/tmp/embaug/table1 \
      --config.data.path=/path/to/embeddings

The paper searched alpha in (0, 0.5] and reported the best alpha per method; results.json names
the alpha that won (results["methods"][NAME]["alpha"]) and results.md lists the whole grid.
Control appears once per trial (it has no alpha): 5 + 4 x 5 x 5 = 105 members, trained as one
compiled program per kind (control, mixup, stitchup): three.
Variants as configs/default.py (`:smoke` with a 2-point alpha grid, `:synthetic`, `trials=N`).
"""

import embaug_jax.augment  # noqa: F401 (registers the built-in methods and settings)
from embaug_jax import configlib, registry

default = configlib.sibling(__file__, "default")


def get_config(arg=None):
    args = configlib.parse_arg(arg, **default.VARIANTS)
    c = default.get_config(arg)
    c.sweep.methods = registry.method_names(tag="paper")  # Table 1's order
    c.sweep.alphas = (0.2, 0.4) if args.smoke else (0.1, 0.2, 0.3, 0.4, 0.5)
    c.sweep.softness = (0.05,)
    return c
