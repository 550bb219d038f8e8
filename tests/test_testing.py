"""Tests for embaug_jax.testing: every registered method passes `check_augmentation`, and
deliberately broken augmentations are caught, each by the property it breaks, with a minimal
example.

The broken methods are one plain E-Mixup / E-Stitchup a researcher might write, with one
mistake switched on at a time, so each failure is that mistake's alone.
"""

import dataclasses
import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embaug_jax import augment as A
from embaug_jax import registry
from embaug_jax.registry import Method
from embaug_jax.run.train import validate_config
from embaug_jax.testing import (
    PROPERTIES,
    AugmentationCheckError,
    CheckReport,
    Example,
    Properties,
    check_augmentation,
    method_cases,
)

MIXUP = ("rows=half", "deterministic", "keyed", "jit", "vmap", "finite", "differentiable",
         "label_mass=1", "convex_mix", "beta_lambda")
STITCHUP = ("rows=half", "deterministic", "keyed", "label_mass=1", "coordinate_stitch")


@pytest.fixture(autouse=True)
def _fast(fast_compile):
    """Compiling the Beta sampler dominates these checks; XLA's optimisations do not pay off."""
    yield


# ---------------------------------------------------------------------------------------------
# Every registered method: the built-ins, and any registered before collection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", method_cases())
def test_registered_method_passes_its_declared_properties(method):
    report = check_augmentation(method)
    assert isinstance(report, CheckReport) and report.passed
    row = registry.method(method)
    assert tuple(r.name for r in report.results) == Properties.parse(row.properties).checks()


def test_every_builtin_declares_what_it_is():
    declared = {m.name: Properties.parse(m.properties) for m in registry.methods()}
    assert set(declared) >= set(A.METHOD_NAMES) | set(registry.method_names(tag="baseline"))
    for name, props in declared.items():
        kind = registry.method(name).kind
        assert props.rows == ("all" if kind == "control" else "half"), name
        assert props.deterministic and props.jit and props.vmap and props.finite, name
        assert props.label_mass == ("soft" if registry.method(name).soft else 1.0), name
        assert props.beta_lambda == (kind != "control"), name
        assert props.convex_mix == (kind in ("mixup", "manifold")), name
        assert props.coordinate_stitch == (kind == "stitchup"), name


def test_method_cases_are_pytest_params_named_by_method():
    cases = method_cases()
    assert [c.id for c in cases] == [c.values[0] for c in cases] == list(registry.method_names())
    assert [c.id for c in method_cases(["e_mixup"])] == ["e_mixup"]


# A user's own registered method: docs/testing.md's brightness shift, a control-kind transform,
# registered by running the doc's config file (inside registry.temporary, so it is undone).
REPO = Path(__file__).resolve().parent.parent


def _run_docs_config() -> dict:
    """Runs docs/testing.md's config file as configs/brightness.py would run; its namespace."""
    source = re.search(r"```python\n(.*?)```", (REPO / "docs" / "testing.md").read_text(),
                       re.S).group(1)
    namespace = {"__file__": str(REPO / "configs" / "brightness.py"), "__name__": "brightness"}
    exec(compile(source, "docs/testing.md", "exec"), namespace)
    return namespace


def test_the_docs_method_registers_checks_and_sweeps_against_the_control():
    with registry.temporary():
        config = _run_docs_config()
        assert "brightness_shift" in [c.id for c in method_cases()]
        assert check_augmentation("brightness_shift").passed
        c = config["get_config"]("smoke")
        validate_config(c)
        assert c.sweep.methods == ("control", "brightness_shift")
        assert c.sweep.brightness == (0.05, 0.1, 0.2)
    assert "brightness_shift" not in registry.method_names()


def test_a_registered_row_is_checked_at_the_settings_given():
    with registry.temporary():
        _run_docs_config()
        row = registry.method("brightness_shift")
        report = check_augmentation(row, kwargs={"brightness": 0.5}, max_examples=5)
        assert report.method == "brightness_shift"
        assert [r.name for r in report.results] == list(row.properties)


def test_a_registered_transform_that_ignores_its_key_is_caught():
    with registry.temporary():
        rows = _run_docs_config()["brightness_rows"]

        def same_shifts(key, x, y, params, *, class_mask=None):
            return rows(jax.random.key(0), x, y, params)

        row = registry.method("brightness_shift")
        registry.register(dataclasses.replace(row, transform=same_shifts, properties=("keyed",)),
                          replace=True)
        _, failed, message = _failure("brightness_shift", None)
    assert list(failed) == ["keyed"] and "check_augmentation(brightness_shift)" in message


def test_registered_rows_must_be_registered_and_declare_properties():
    with pytest.raises(ValueError, match="not the registered one"):
        check_augmentation(Method(name="e_mixup", display="Mine", kind="mixup", reads=("alpha",)))
    with registry.temporary():
        _run_docs_config()
        row = registry.method("brightness_shift")
        registry.register(dataclasses.replace(row, properties=()), replace=True)
        with pytest.raises(ValueError, match="declares no properties"):
            check_augmentation("brightness_shift")
    with pytest.raises(TypeError, match="properties must be a tuple of names"):
        with registry.temporary(Method(name="x", display="X", kind="control", properties="jit")):
            pass
    with pytest.raises(ValueError, match="unknown method 'mixup'; .*did you mean"):
        check_augmentation("mixup")


# ---------------------------------------------------------------------------------------------
# A researcher's own methods, and the mistakes they might make
# ---------------------------------------------------------------------------------------------


def _parents(key, x, y):
    perm = jax.random.permutation(key, x.shape[0])
    a, b = perm[: x.shape[0] // 2], perm[x.shape[0] // 2:]
    return x[a], y[a], x[b], y[b]


def my_mixup(key, x, y, alpha, *, mistake=None):
    """E-Mixup written plainly; `mistake` breaks it one way."""
    if mistake == "ignores_key":
        key = jax.random.key(0)
    if mistake == "branches_on_alpha" and alpha > 1:
        alpha = 1.0
    k_pair, k_lam = jax.random.split(key)
    x_a, y_a, x_b, y_b = _parents(k_pair, x, y)
    shape = (x_a.shape[0], 1)
    lam = (jax.random.uniform(k_lam, shape) if mistake == "uniform_lambda"
           else jax.random.beta(k_lam, alpha, alpha, shape))
    x_mix = lam * x_a.astype(jnp.float32) + (1 - lam) * x_b.astype(jnp.float32)
    if mistake == "stops_gradient":
        x_mix = jax.lax.stop_gradient(x_mix)
    label_lam = 1 - lam if mistake == "labels_use_one_minus_lambda" else lam
    y_mix = label_lam * y_a + (1 - label_lam) * y_b
    if mistake == "labels_in_embedding_dtype":
        y_mix = y_mix.astype(x.dtype)
    return x_mix.astype(x.dtype), y_mix


def my_stitchup(key, x, y, alpha, *, mistake=None):
    """E-Stitchup written plainly: each coordinate from x_a with probability lambda."""
    k_pair, k_lam, k_mask = jax.random.split(key, 3)
    x_a, y_a, x_b, y_b = _parents(k_pair, x, y)
    lam = jax.random.beta(k_lam, alpha, alpha, (x_a.shape[0], 1))
    rows = 1 if mistake == "one_mask_per_batch" else x_a.shape[0]
    from_a = jax.random.uniform(k_mask, (rows, x.shape[1])) < lam
    return jnp.where(from_a, x_a, x_b), lam * y_a + (1 - lam) * y_b


def my_soft_mixup(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, mistake=None):
    """Soft E-Mixup written plainly: the paper's softening after `my_mixup`."""
    x_mix, y_mix = my_mixup(key, x, y, alpha)
    positive = y_mix > 0
    softened = jnp.where(positive, jnp.maximum(y_mix - softness, 0), 0)
    receivers = y_mix.shape[1] if mistake == "share_over_all_classes" else jnp.sum(
        ~positive, axis=1, keepdims=True)
    return x_mix, jnp.where(positive, softened, negative_mass / receivers)


def _failure(fn, properties, **kwargs):
    with pytest.raises(AugmentationCheckError) as caught:
        check_augmentation(fn, properties, **kwargs)
    report = caught.value.report
    return report, {r.name: r for r in report.failures}, str(caught.value)


def test_a_plain_user_mixup_passes_every_property():
    report = check_augmentation(my_mixup, MIXUP)
    assert [r.name for r in report.results] == list(MIXUP)
    assert "KS p =" in str(report)


def test_user_stitchup_and_soft_mixup_pass():
    check_augmentation(my_stitchup, STITCHUP)
    check_augmentation(my_soft_mixup, ("rows=half", "deterministic", "label_mass=soft",
                                       "convex_mix"))


def test_an_ignored_key_is_caught_with_a_minimal_example():
    broken = functools.partial(my_mixup, mistake="ignores_key")
    report, failed, message = _failure(broken, ("rows=half", "deterministic", "keyed",
                                                "label_mass=1", "convex_mix"))
    assert list(failed) == ["keyed"]
    assert "the key does not reach the method's random draws" in message
    example = failed["keyed"].example
    # Shrunk to the smallest batch, width and seed: the mistake shows on any input.
    assert (example.batch, example.dim, example.seed, example.dtype) == (2, 1, 0, "float32")
    assert repr(example) in message and "FAIL  keyed" in message


def test_labels_mixed_with_the_wrong_lambda_break_the_geometry():
    broken = functools.partial(my_mixup, mistake="labels_use_one_minus_lambda")
    _, failed, message = _failure(broken, ("rows=half", "label_mass=1", "convex_mix"))
    assert list(failed) == ["convex_mix"]
    assert "is not its parents' blend at their label weights" in message
    assert failed["convex_mix"].example.batch == 2


def test_a_stitch_mask_drawn_once_per_batch_is_caught():
    broken = functools.partial(my_stitchup, mistake="one_mask_per_batch")
    _, failed, message = _failure(broken, STITCHUP)
    assert list(failed) == ["coordinate_stitch"]
    # Each row alone is a fair stitch; only the rows' masks together betray it.
    assert "unlike independent draws" in message and "one mask" in message
    assert "512 x 64 at alpha 1, keys fold_in(key(0), i)" in message


def test_a_soft_variant_whose_mass_drifts_is_caught():
    broken = functools.partial(my_soft_mixup, mistake="share_over_all_classes")
    _, failed, message = _failure(broken, ("rows=half", "label_mass=soft"))
    assert list(failed) == ["label_mass=soft"]
    assert "negative classes hold" in message and "not negative_mass = 1" in message
    assert failed["label_mass=soft"].example.batch == 2


def test_soft_labels_are_checked_at_the_softness_the_method_is_called_with():
    check_augmentation(A.METHODS["soft_e_mixup"], ("rows=half", "label_mass=soft"),
                       kwargs={"softness": 0.2, "negative_mass": None})
    softer = functools.partial(A.METHODS["soft_e_mixup"], softness=0.2)
    _, failed, message = _failure(softer, ("rows=half", "label_mass=soft"))
    assert "+ softness 0.05 each" in message and "before softening, not 1" in message


def test_lambdas_from_the_wrong_distribution_fail_the_ks_test():
    broken = functools.partial(my_mixup, mistake="uniform_lambda")
    _, failed, message = _failure(broken, ("rows=half", "label_mass=1", "beta_lambda"))
    # Uniform is Beta(1, 1): only the test at alpha 0.2 can tell.
    assert "at alpha 0.2" in message and "not Beta(0.2, 0.2)" in message and "< 0.0001" in message


def test_a_python_branch_on_alpha_fails_jit_only():
    broken = functools.partial(my_mixup, mistake="branches_on_alpha")
    _, failed, message = _failure(broken, ("rows=half", "jit", "vmap"))
    assert list(failed) == ["jit"] and "TracerBoolConversionError" in message


def test_a_stopped_gradient_is_caught():
    broken = functools.partial(my_mixup, mistake="stops_gradient")
    _, failed, message = _failure(broken, ("rows=half", "differentiable"))
    assert "all zero" in failed["differentiable"].detail


def test_labels_cast_to_bfloat16_break_the_documented_dtypes():
    broken = functools.partial(my_mixup, mistake="labels_in_embedding_dtype")
    _, failed, message = _failure(broken, ("rows=half",))
    assert "y_out is bfloat16; it should keep the input's float32" in message
    assert failed["rows=half"].example.dtype == "bfloat16"


def test_non_finite_outputs_are_caught_at_their_smallest_case():
    def standardise(key, x, y, alpha):
        del key, alpha
        x = x.astype(jnp.float32)
        return ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)).astype(x.dtype), y

    _, failed, message = _failure(standardise, ("rows=all", "finite"))
    assert "non-finite" in message and failed["finite"].example.dim == 1


def test_a_method_that_raises_is_reported_not_crashed():
    def raises(key, x, y, alpha):
        raise RuntimeError("not written yet")

    report, failed, message = _failure(raises, ("rows=all", "finite"))
    assert len(failed) == 2 and "raised RuntimeError: not written yet" in message


def test_a_wrong_return_structure_names_the_signature():
    _, _, message = _failure(lambda key, x, y, alpha: x, ("rows=all",))
    assert "fn must return (x_out, y_out)" in message


# ---------------------------------------------------------------------------------------------
# Declarations, examples and the report
# ---------------------------------------------------------------------------------------------


def test_properties_round_trip_and_defaults():
    props = Properties.parse(MIXUP)
    assert props.declaration() == MIXUP
    assert props.dtypes == ("float32", "bfloat16") and props.label_range == (0.0, 1.0)
    soft = Properties.parse(["label_mass=soft", "rows=all", "dtypes=float32",
                             "label_range=0,2"])
    assert soft.declaration() == ("rows=all", "dtypes=float32", "label_mass=soft",
                                  "label_range=0,2")
    assert soft.checks() == ("rows=all", "label_mass=soft")
    assert Properties.parse(frozenset(MIXUP)) == props
    assert set(PROPERTIES) >= {n.partition("=")[0] for n in MIXUP}


@pytest.mark.parametrize("declaration, message", [
    (("convex_mixup",), "did you mean convex_mix"),
    (("rows",), "needs a value"),
    (("rows=some",), "rows must be 'half'"),
    (("jit=yes",), "takes no value"),
    (("jit", "jit"), "declared twice"),
    (("label_mass=heavy",), "label_mass must be a number"),
    (("dtypes=float16",), "dtypes must be"),
    (("convex_mix",), "declare label_mass too"),
    (("label_mass=1", "convex_mix", "coordinate_stitch"), "exclude each other"),
    (("label_range=1,0", "label_mass=1"), "lo < hi"),
    ("jit", "collection of names"),
])
def test_bad_declarations_are_refused_with_the_fix(declaration, message):
    with pytest.raises(ValueError, match=message):
        Properties.parse(declaration)


def test_a_function_needs_a_declaration():
    with pytest.raises(ValueError, match="declare what to check"):
        check_augmentation(my_mixup)


def test_example_inputs_reproduce_and_name_the_parents():
    example = Example(batch=4, dim=3, classes=6, dtype="bfloat16", alpha=0.3, seed=7, scale=1e-3)
    key, x, y = example.inputs()
    again = example.inputs()
    assert x.dtype == jnp.bfloat16 and y.dtype == jnp.float32 and y.shape == (4, 6)
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(again[1], np.float32))
    np.testing.assert_array_equal(y, np.eye(4, 6))
    assert float(jnp.abs(x.astype(jnp.float32)).max()) < 0.01
    assert str(example).startswith("batch=4, dim=3, classes=6, dtype=bfloat16, alpha=0.3, seed=7")
