"""Ablation: "is it the mixing or the soft labels?" The paper's five methods against five baselines
that each isolate one ingredient, in one sweep.

  python -m embaug_jax train --config=configs/ablation.py --workdir=/tmp/embaug/ablation \
      --config.data.path=/path/to/embeddings

Baselines (`embaug_jax.augment.baselines`, each tested against its definition):
  soft_control     the paper's label softening (sec. 2.4) without mixing     softness
  label_smoothing  standard label smoothing, (1 - eps) y + eps / K            smoothing (eps)
  gaussian_noise   x + std * rms(x) * N(0, I) on the embeddings               noise_std
  feature_dropout  inverted dropout on the embedding elements                  drop_rate
  manifold_mixup   E-Mixup's pairs mixed after the first hidden layer          alpha
Every method runs over the grids of the hyperparameters it reads (config.sweep.alphas, softness,
smoothing, noise_std, drop_rate); results.md picks each method's best setting as Table 1 picks
alpha, and compares each with the control trial by trial. Variants as configs/default.py
(`:smoke`, `:synthetic`, `trials=N`).
"""

import embaug_jax.augment  # noqa: F401 (registers the built-in methods and settings)
from embaug_jax import configlib, registry

default = configlib.sibling(__file__, "default")


def get_config(arg=None):
    args = configlib.parse_arg(arg, **default.VARIANTS)
    c = default.get_config(arg)
    # The paper's five, then the five baselines.
    c.sweep.methods = registry.method_names(tag="paper") + registry.method_names(tag="baseline")
    c.sweep.alphas = (0.2, 0.4)
    c.sweep.softness = (0.05,)
    c.sweep.smoothing = (0.05, 0.1)
    c.sweep.noise_std = (0.1, 0.3)
    c.sweep.drop_rate = (0.1, 0.3)
    if args.smoke:  # one setting each
        c.sweep.alphas, c.sweep.smoothing = (0.2,), (0.1,)
        c.sweep.noise_std, c.sweep.drop_rate = (0.1,), (0.1,)
    return c
