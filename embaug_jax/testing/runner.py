"""`check_augmentation`: runs the properties a method declares and reports what holds.

Hypothesis settings, the same on every run so a failure in CI reproduces anywhere:

  max_examples  MAX_EXAMPLES (20) drawn examples per property; TRANSFORM_EXAMPLES (4) for jit,
                vmap and differentiable, whose examples share one shape (one compile each)
  deadline      None: the first call of a shape compiles for seconds
  derandomize   True: examples come from a fixed seed, not the clock, and no example database
                is read or written
  phases        explicit, generate, shrink: a failure is shrunk to a minimal example
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import hypothesis

from embaug_jax import registry
from embaug_jax.testing import checks, registered
from embaug_jax.testing.examples import Example, examples
from embaug_jax.testing.properties import Properties

__all__ = ["AugmentationCheckError", "CheckReport", "MAX_EXAMPLES", "PropertyResult",
           "TRANSFORM_EXAMPLES", "check_augmentation", "method_cases"]

MAX_EXAMPLES = 20
TRANSFORM_EXAMPLES = 4
_SETTINGS = dict(
    deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
    phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink),
    verbosity=hypothesis.Verbosity.quiet,
    # Drawing an example is cheap; the calls are slow only while they compile.
    suppress_health_check=list(hypothesis.HealthCheck),
)


@dataclasses.dataclass(frozen=True)
class PropertyResult:
    """The outcome of one declared property."""

    name: str             # as declared, e.g. "label_mass=soft"
    passed: bool
    examples: int         # drawn examples run, shrinking included
    seconds: float
    detail: str = ""      # the statistic of a fixed-seed check; why it failed
    example: Example | None = None  # the minimal failing example, for drawn checks

    def __str__(self) -> str:
        ran = f"{self.examples} examples" if self.examples else "fixed seed"
        mark = "ok  " if self.passed else "FAIL"
        head = f"  {mark}  {self.name:<20} {ran:>12}  {self.seconds:5.1f} s"
        if self.passed:
            return head + (f"  {self.detail}" if self.detail else "")
        lines = [head, f"        {self.detail}"]
        if self.example is not None:
            lines.append(f"        minimal example: {self.example!r}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What `check_augmentation` found: one `PropertyResult` per declared property."""

    method: str
    results: tuple[PropertyResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[PropertyResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def __str__(self) -> str:
        held = sum(r.passed for r in self.results)
        seconds = sum(r.seconds for r in self.results)
        lines = [f"check_augmentation({self.method}): {held} of {len(self.results)} properties "
                 f"hold ({seconds:.1f} s)"]
        lines += [str(r) for r in self.results]
        if any(r.example is not None for r in self.failures):
            lines.append("  reproduce: key, x, y = example.inputs(); "
                         "x_out, y_out = fn(key, x, y, example.alpha)")
        return "\n".join(lines)


class AugmentationCheckError(AssertionError):
    """Some declared property does not hold; `report` has them all, the message shows it."""

    def __init__(self, report: CheckReport):
        super().__init__(str(report))
        self.report = report


def check_augmentation(fn: Callable | str | registry.Method,
                       properties: Iterable[str] | Properties | None = None, *,
                       kwargs: Mapping[str, Any] | None = None,
                       max_examples: int = MAX_EXAMPLES, name: str | None = None) -> CheckReport:
    """Checks that `fn` is a well-behaved JAX augmentation: the properties it declares hold.

    Args:
      fn: `fn(key, x, y, alpha, **kwargs) -> (x_out, y_out)`, key first; or a registered
        method, by name or `registry.Method` row: its rows as a sweep trains them are checked
        (`registered.trained_rows`) against the row's `properties`.
      properties: the declaration, e.g. ("rows=half", "deterministic", "keyed", "jit", "vmap",
        "finite", "differentiable", "label_mass=1", "convex_mix", "beta_lambda"); see
        `PROPERTIES`. A registered method's row declares its own.
      kwargs: keyword arguments for every call (e.g. softness=0.1: label_mass=soft then
        checks that softness). A registered method is called with the settings it reads,
        other than alpha, at their default grids' first values, which `kwargs` overrides.
      max_examples: drawn examples per property (at most TRANSFORM_EXAMPLES for jit, vmap
        and differentiable, whose examples share one shape).
      name: the method's name in the report (default: the method's or function's).
    Returns:
      The `CheckReport`, when every property holds.
    Raises:
      AugmentationCheckError: some property does not hold; the message is the report, with
        each failure's reason and minimal example.
    """
    if isinstance(fn, (str, registry.Method)):
        fn, declared, settings = registered.resolve(fn)
        properties = declared if properties is None else properties
        kwargs = {**settings, **(kwargs or {})}
    if properties is None:
        raise ValueError("declare what to check: check_augmentation(fn, properties=(...)), e.g. "
                         '("rows=half", "deterministic", "keyed", "jit", "vmap", "finite", '
                         '"differentiable", "label_mass=1", "convex_mix", "beta_lambda")')
    properties = Properties.parse(properties)
    subject = checks.Subject(fn, properties, kwargs or {})
    results = [_check_property(subject, prop, prop.partition("=")[0], max_examples)
               for prop in properties.checks()]
    report = CheckReport(name or getattr(fn, "__name__", repr(fn)), tuple(results))
    if not report.passed:
        raise AugmentationCheckError(report)
    return report


def method_cases(names: Iterable[str] | None = None) -> list:
    """pytest parameters, one per registered method (or per name given), for

        @pytest.mark.parametrize("method", method_cases())
        def test_method_is_well_behaved(method):
            check_augmentation(method)

    Every registered method is included, so a method registered (and given its properties)
    before the test module is collected is checked with no new test code.
    """
    import pytest

    return [pytest.param(n, id=n)
            for n in (registry.method_names() if names is None else names)]


def _check_property(subject: checks.Subject, prop: str, key: str,
                    max_examples: int) -> PropertyResult:
    start, runs, detail = time.perf_counter(), 0, ""
    try:
        if key in checks.EXAMPLE_CHECKS:
            transform = key in checks.TRANSFORM_CHECKS
            strategy = examples(subject.properties.rows, subject.properties.dtypes,
                                transform=transform)
            runs, failure = _run_examples(
                checks.EXAMPLE_CHECKS[key], subject, strategy,
                min(max_examples, TRANSFORM_EXAMPLES) if transform else max_examples)
            if failure is not None:
                raise failure
        if key in checks.FIXED_SEED_CHECKS:
            detail = checks.FIXED_SEED_CHECKS[key](subject)
    except checks.CheckFailure as failure:
        return PropertyResult(prop, False, runs, time.perf_counter() - start, failure.message,
                              failure.example)
    except Exception as err:  # noqa: BLE001 - a crash is reported as that property's failure
        return PropertyResult(prop, False, runs, time.perf_counter() - start, _raised(err))
    return PropertyResult(prop, True, runs, time.perf_counter() - start, detail)


def _run_examples(check: Callable, subject: checks.Subject, strategy,
                  max_examples: int) -> tuple[int, checks.CheckFailure | None]:
    """Runs `check` on drawn examples: (how many ran, the minimal failure or None)."""
    runs = 0

    @hypothesis.settings(max_examples=max_examples, **_SETTINGS)
    @hypothesis.given(strategy)
    def holds(example):
        nonlocal runs
        runs += 1
        try:
            check(subject, example)
        except checks.CheckFailure as failure:
            failure.example = example
            raise
        except Exception as err:
            raise checks.CheckFailure(_raised(err), example) from err

    try:
        holds()
    except checks.CheckFailure as failure:
        return runs, failure
    return runs, None


def _raised(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"raised {type(err).__name__}: {first[:300]}"
