"""The paper's embedding augmentations (sections 2.2-2.4) and the ablation baselines, in JAX.

Two forms of the same mathematics:

* Named functions, key first -- `e_mixup`, `e_stitchup`, `soft_e_mixup`, `soft_e_stitchup`,
  `control` and `soften_labels` (`methods`), and the baselines `soft_control`,
  `label_smoothing`, `gaussian_noise`, `feature_dropout`, `manifold_mixup` (`baselines`).
  `METHODS` puts the paper's five behind one signature.
* A traced form -- `MethodParams`, `method_params`, `augment_batch`, `augment_rows` (`traced`)
  -- in which the method itself and its settings are arrays, so one compiled program (and one
  `jax.vmap` over sweep members) serves every method and setting of a kind. For the same key it
  returns what the named function returns.

Importing this package registers every built-in method and the settings they read in
`embaug_jax.registry`, from which every list of methods or settings is derived.

Pairing. A mixing method combines a first parent `a` with a second parent `b`:
  "halve"   (the paper) shuffles the batch and pairs its first half with its second: B/2 outputs,
            every example used exactly once. B must be even.
  "permute" pairs every example (as `a`) with a partner drawn uniformly from the other B - 1
            examples (never itself; a row may be a partner several times): B outputs.
  "flip"    pairs row i with row B - 1 - i (no randomness in the pairing): B outputs. For odd B
            the middle row is paired with itself, so it comes out as it went in (up to rounding
            in mixup) with its own label.

One lambda ~ Beta(alpha, alpha) is drawn per pair; lambda is the weight of parent `a` in the
embedding (mixup: `lam * x_a + (1 - lam) * x_b`; stitchup: each element comes from `x_a` with
probability lam) and in the label (`lam * y_a + (1 - lam) * y_b`). `1 - lam` is computed without
cancellation (see `sample_lambda`), so near-one-sided pairs treat both parents alike.

Segments. `segments=(n1, n2, ...)` treats x as the concatenation of segments of those sizes (e.g.
title | description | image) and draws an independent lambda per segment (stitchup: an independent
mask rate). The label is then mixed by the size-weighted mean of the segment lambdas, i.e. by the
average over coordinates of parent `a`'s per-coordinate weight. That is the expected share of the
vector that comes from `a` (the same quantity "realized" measures exactly in stitchup), and it
reduces to the paper's rule when every segment draws the same lambda.

Labels. `y` is either [B, C] float (one-hot or already soft; its dtype is kept) or [B] integer
class ids with `num_classes=` given (they become float32 one-hot: targets stay float32 even for
bfloat16 embeddings, where e.g. 0.1 is not representable). Embeddings keep their dtype; bfloat16 is
mixed in float32 and rounded once.

Validation. Shapes, ranks and names are checked always (`checks`). Values (alpha > 0, softness in
[0, 1), labels in [0, num_classes), finite inputs) can only be checked on concrete arrays: under
`jax.jit`/`jax.vmap` tracing they are not, so a traced alpha <= 0 yields NaN, a traced
out-of-range class id an all-zero label row and a traced method index outside {0, 1, 2} acts
as mixup.
"""

# Importing registers the rows: methods.py's (the paper's, in Table 1's order) before
# baselines.py's, which imports it.
from embaug_jax.augment.baselines import (
    ManifoldPairs,
    feature_dropout,
    gaussian_noise,
    label_smoothing,
    manifold_mixup,
    manifold_rows,
    smooth_labels,
    soft_control,
)
from embaug_jax.augment.checks import LABEL_WEIGHTS, PAIRINGS, check_options
from embaug_jax.augment.methods import (
    METHOD_NAMES,
    METHODS,
    UnknownMethodError,
    control,
    e_mixup,
    e_stitchup,
    num_outputs,
    sample_lambda,
    soft_e_mixup,
    soft_e_stitchup,
    soften_labels,
)
from embaug_jax.augment.traced import (
    MIX_CONTROL,
    MIX_MANIFOLD,
    MIX_MIXUP,
    MIX_STITCHUP,
    MethodParams,
    augment_batch,
    augment_rows,
    draw_weights,
    kind_rows,
    kind_transforms,
    method_params,
)
from embaug_jax.registry import KINDS

__all__ = [
    "KINDS",
    "LABEL_WEIGHTS",
    "METHODS",
    "METHOD_NAMES",
    "MIX_CONTROL",
    "MIX_MANIFOLD",
    "MIX_MIXUP",
    "MIX_STITCHUP",
    "ManifoldPairs",
    "MethodParams",
    "PAIRINGS",
    "UnknownMethodError",
    "augment_batch",
    "augment_rows",
    "check_options",
    "control",
    "draw_weights",
    "e_mixup",
    "e_stitchup",
    "feature_dropout",
    "gaussian_noise",
    "kind_rows",
    "kind_transforms",
    "label_smoothing",
    "manifold_mixup",
    "manifold_rows",
    "method_params",
    "num_outputs",
    "sample_lambda",
    "smooth_labels",
    "soft_control",
    "soft_e_mixup",
    "soft_e_stitchup",
    "soften_labels",
]
