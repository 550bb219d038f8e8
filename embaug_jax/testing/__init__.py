"""Property-based checks that a function is a well-behaved embedding augmentation.

For whoever writes a new augmentation: one call tells whether it behaves as a JAX augmentation
should before a sweep trusts it.

    from embaug_jax.testing import check_augmentation

    check_augmentation(my_aug, properties=("rows=half", "deterministic", "keyed", "jit", "vmap",
                                           "finite", "differentiable", "label_mass=1",
                                           "convex_mix", "beta_lambda"))

`my_aug(key, x, y, alpha, **kwargs) -> (x_out, y_out)` is called on drawn examples (hypothesis,
over batch and embedding sizes, float32 and bfloat16, alphas, keys and magnitudes) that the
checker can recognise: one-hot labels name each output's parents and their weights, so the
geometry and the lambdas are read back without changing the signature. The declared properties
(`PROPERTIES`) run, and a failure raises `AugmentationCheckError` whose message names the
property, why it failed and the minimal example hypothesis shrank it to.

A registered method declares its properties in its `registry.Method` row and is checked by name
or row, as a sweep trains it (`check_augmentation("e_mixup")`, see `registered`);
`method_cases()` parametrises a pytest test over every registered method.

Hypothesis settings (see `runner`): 20 examples per property (4 for jit, vmap and
differentiable), no deadline, derandomized (a fixed seed, no example database), shrinking on.
Fixed-seed distribution tests and their thresholds are listed in `checks`.

This package is a tool above the stages: it may import any of them; none of them imports it.
"""

from embaug_jax.testing.examples import Example
from embaug_jax.testing.properties import PROPERTIES, Properties
from embaug_jax.testing.runner import (
    MAX_EXAMPLES,
    TRANSFORM_EXAMPLES,
    AugmentationCheckError,
    CheckReport,
    PropertyResult,
    check_augmentation,
    method_cases,
)

__all__ = ["AugmentationCheckError", "CheckReport", "Example", "MAX_EXAMPLES", "PROPERTIES",
           "Properties", "PropertyResult", "TRANSFORM_EXAMPLES", "check_augmentation",
           "method_cases"]
