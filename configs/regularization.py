"""Is the gain just more regularisation? The five methods and label smoothing, each tuned over the
same weight decay x dropout grid, so the control is tuned as hard as every augmentation.

  python -m embaug_jax train --config=configs/regularization.py --workdir=/tmp/embaug/reg \
      --config.data.path=/path/to/embeddings

Every method -- the control, E-Mixup, E-Stitchup, their soft variants (Table 1) and label
smoothing (the standard soft-target control, configs/ablation.py) -- runs at weight decay 1e-5,
1e-4 and 1e-3 crossed with dropout 0.1, 0.3 and 0.5, each at one value of its own setting
(alpha 0.2, softness 0.05, smoothing 0.1): nine settings per method, so no method is tuned
harder than another. The weight decay and the dropout rate are traced member values
(embaug_jax/train/optim.py): 6 x 9 x 5 trials = 270 members train as one compiled program per
kind (control, mixup, stitchup), three. results.md chooses each method's weight decay and
dropout on the selection rows and reports it on the others with paired intervals against the
control, and its "Along each swept setting" tables and settings.png show weighted AUC and "none"
accuracy against each. Variants as configs/default.py (`:smoke` with a 2 x 2 grid,
`:synthetic`, `trials=N`).
"""

import embaug_jax.train.optim  # noqa: F401 (registers the built-in methods and settings)
from embaug_jax import configlib, registry

default = configlib.sibling(__file__, "default")


def get_config(arg=None):
    args = configlib.parse_arg(arg, **default.VARIANTS)
    c = default.get_config(arg)
    c.sweep.methods = registry.method_names(tag="paper") + ("label_smoothing",)
    c.sweep.alphas, c.sweep.softness, c.sweep.smoothing = (0.2,), (0.05,), (0.1,)
    c.sweep.weight_decay = (1e-5, 1e-4, 1e-3)
    c.sweep.dropout = (0.1, 0.3, 0.5)
    if args.smoke:
        c.sweep.weight_decay, c.sweep.dropout = (1e-4, 1e-3), (0.1, 0.3)
    return c
