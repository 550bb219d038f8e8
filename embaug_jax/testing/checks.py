"""One check per property: each raises `CheckFailure` with what it found, or returns.

Example checks take one drawn `Example` (hypothesis picks them and shrinks a failure to a
minimal one); fixed-seed checks (`FIXED_SEED_CHECKS`) test distributions on large batches drawn
once, at stated thresholds:

  beta_lambda        min(lambda, 1 - lambda) of 2048 output rows against Beta(alpha, alpha)
                     folded at 1/2, at alpha 0.2 and 1 (Kolmogorov-Smirnov, scipy.stats.beta):
                     fails if p < 1e-4. Values below 1e-6 are compared as one mass at 1e-6
                     (float32 resolves a weight near 1 only to 6e-8, so its complement's shape
                     there is noise).
  coordinate_stitch  per row, the count k of coordinates taken from a parent of label weight
                     lambda, among the n where the parents differ, must lie in the central
                     1 - 1e-6 interval of Binomial(n, lambda) (every drawn example); on 2048
                     rows of 64 at alpha 1 the pooled z of those counts must be within 4.9
                     (p = 1e-6) and the overlap of the masks of two rows must be
                     Binomial(n, lambda lambda') (independent masks: chi-square over row pairs,
                     fails if p < 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from embaug_jax.testing.examples import LABEL_TOL, SHARE_TOL, Example, parent_weights
from embaug_jax.testing.properties import Properties

__all__ = ["CheckFailure", "EXAMPLE_CHECKS", "FIXED_SEED_CHECKS", "Subject", "TRANSFORM_CHECKS"]

# Relative tolerance of an embedding against its expected value: float32 sums of two products,
# or one bfloat16 rounding of a float32 result (2^-9) with room for a second.
X_TOL = {"float32": 1e-5, "bfloat16": 2.0**-7}
KEYED_TRIES = 32  # other keys tried before "keyed" fails: a tiny batch may repeat a few draws
VMAP_KEYS = 3
GRAD_KEYS = 4  # a sparse method (dropout on 2 x 1) can zero one draw's gradient, not four
BINOMIAL_LEVEL = 1e-6
STAT_SHAPE = (512, 64)  # batch, dim of the fixed-seed samples
STAT_ROWS = 2048
STAT_SEED = 0
BETA_ALPHAS = (0.2, 1.0)
KS_P_MIN = 1e-4
FOLD_FLOOR = 1e-6
STITCH_ALPHA = 1.0
POOLED_Z_MAX = 4.9
INDEPENDENCE_P_MIN = 1e-6
INDEPENDENCE_MIN_VAR = 5.0  # pairs whose overlap count varies less are left out (normal approx.)


class CheckFailure(AssertionError):
    """A property does not hold; `example` is the (minimal) input it failed on, if drawn."""

    def __init__(self, message: str, example: Example | None = None):
        super().__init__(message)
        self.message = message
        self.example = example


class Subject:
    """The function under check, `fn(key, x, y, alpha, **kwargs) -> (x_out, y_out)`, with its
    eager outputs kept per example so every property reads the same call."""

    def __init__(self, fn: Callable, properties: Properties, kwargs: Mapping[str, Any]):
        self.fn, self.properties, self.kwargs = fn, properties, dict(kwargs)
        self.softness = float(self.kwargs.get("softness", 0.05))
        self.negative_mass = self.kwargs.get("negative_mass", 1.0)
        if properties.label_mass == "soft" and self.negative_mass is not None and not (
                float(self.negative_mass) > 0):
            raise ValueError("label_mass=soft tells a parent clamped to 0 from a negative class "
                             "by the share the negatives receive: check with negative_mass > 0 "
                             f"or None, got {self.negative_mass}")
        self.jitted = jax.jit(self.call)
        # jit and vmap are checked in one compiled program, jax.jit(jax.vmap(fn)) over keys; only
        # when it disagrees with the eager loop does each run alone, to name the one that fails.
        self._jit_vmap = jax.jit(jax.vmap(self.call, in_axes=(0, None, None, None)))
        self._eager: dict[Example, tuple[np.ndarray, ...]] = {}
        self._members: dict[Example, tuple[jax.Array, list]] = {}
        self._jit_vmap_matches: dict[Example, bool] = {}
        self._samples: dict[float, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def call(self, key, x, y, alpha):
        out = self.fn(key, x, y, alpha, **self.kwargs)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailure(f"fn must return (x_out, y_out), got {type(out).__name__}"
                               + (f" of {len(out)}" if isinstance(out, (tuple, list)) else ""))
        return tuple(out)

    def eager(self, example: Example) -> tuple[np.ndarray, ...]:
        """(x, y, x_out, y_out) as numpy arrays (x and x_out in the example's dtype)."""
        if example not in self._eager:
            key, x, y = example.inputs()
            x_out, y_out = (np.asarray(v) for v in self.call(key, x, y, example.alpha))
            if x_out.ndim != 2 or x_out.shape[1] != example.dim:
                raise CheckFailure(f"x_out must be [rows, dim={example.dim}], got shape "
                                   f"{x_out.shape}")
            if y_out.shape != (x_out.shape[0], example.classes):
                raise CheckFailure(f"y_out must be [rows={x_out.shape[0]}, classes="
                                   f"{example.classes}], got shape {y_out.shape}")
            self._eager[example] = (np.asarray(x), np.asarray(y), x_out, y_out)
        return self._eager[example]

    def members(self, example: Example) -> tuple[jax.Array, list]:
        """(VMAP_KEYS keys split from the example's, the eager outputs for each)."""
        if example not in self._members:
            key, x, y = example.inputs()
            keys = jax.random.split(key, VMAP_KEYS)
            self._members[example] = keys, [self.call(k, x, y, example.alpha) for k in keys]
        return self._members[example]

    def jit_vmap_matches(self, example: Example) -> bool:
        """Whether jax.jit(jax.vmap(fn)) over `members`' keys gives their eager outputs."""
        if example not in self._jit_vmap_matches:
            keys, want = self.members(example)
            _, x, y = example.inputs()
            try:
                got = [np.asarray(v)
                       for v in self._jit_vmap(keys, x, y, jnp.float32(example.alpha))]
            except Exception:  # noqa: BLE001 - the checks run each alone and report what raised
                self._jit_vmap_matches[example] = False
            else:
                self._jit_vmap_matches[example] = all(
                    _mismatch("", [v[i] for v in got], want[i], example) is None
                    for i in range(len(keys)))
        return self._jit_vmap_matches[example]

    def weights(self, example: Example, y_out: np.ndarray) -> np.ndarray:
        """Each output row's parent weights, checked to be a mix of one or two input rows."""
        w = parent_weights(y_out, example.batch, self.properties.label_mass, self.softness)
        if self.properties.label_mass != "soft":
            extra = np.abs(y_out[:, example.batch:]).max(axis=1, initial=0.0)
            if (extra > LABEL_TOL).any():
                r = int(np.argmax(extra))
                raise CheckFailure(f"row {r} puts label mass {extra[r]:.3g} on a class no input "
                                   "row has, so its labels do not name its parents")
        count = (w > 0).sum(axis=1)
        for r in np.flatnonzero((count < 1) | (count > 2)):
            raise CheckFailure(f"row {r}'s labels name {count[r]} parents (input rows "
                               f"{_list(np.flatnonzero(w[r] > 0))}); a mix has one or two")
        bad = (np.abs(w.sum(axis=1) - 1) > LABEL_TOL) | (w < -LABEL_TOL).any(axis=1)
        for r in np.flatnonzero(bad):
            raise CheckFailure(f"row {r}'s parent weights {_list(w[r][w[r] != 0])} are not a "
                               "convex combination (>= 0, summing to 1)")
        return w

    def sample(self, alpha: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """[(x float32, x_out float32, weights)] of calls at a fixed seed, >= STAT_ROWS rows."""
        if alpha not in self._samples:
            batch, dim = STAT_SHAPE
            dtype = "float32" if "float32" in self.properties.dtypes else self.properties.dtypes[0]
            example = Example(batch, dim, batch + 1, dtype, alpha, STAT_SEED)
            key, x, y = example.inputs()
            calls, rows = [], 0
            while rows < STAT_ROWS:
                x_out, y_out = (np.asarray(v) for v in self.call(
                    jax.random.fold_in(key, len(calls)), x, y, alpha))
                try:
                    w = self.weights(example, y_out.astype(np.float64))
                except CheckFailure as failure:
                    raise CheckFailure(f"{failure.message} ({_sample_text(alpha)})") from None
                calls.append((np.asarray(x, np.float32), x_out.astype(np.float32), w))
                rows += len(w)
            self._samples[alpha] = calls
        return self._samples[alpha]


# ---------------------------------------------------------------------------------------------
# Checks of one example
# ---------------------------------------------------------------------------------------------


def check_rows(subject: Subject, example: Example) -> None:
    x, y, x_out, y_out = subject.eager(example)
    rows = example.batch // 2 if subject.properties.rows == "half" else example.batch
    if x_out.shape[0] != rows:
        raise CheckFailure(f"{x_out.shape[0]} output rows from a batch of {example.batch}, but "
                           f"rows={subject.properties.rows} means {rows}")
    for name, out, given in (("x_out", x_out, x), ("y_out", y_out, y)):
        if out.dtype != given.dtype:
            raise CheckFailure(f"{name} is {out.dtype}; it should keep the input's {given.dtype}")


def check_deterministic(subject: Subject, example: Example) -> None:
    first = subject.eager(example)[2:]
    key, x, y = example.inputs()
    again = subject.call(key, x, y, example.alpha)
    for name, a, b in zip(("x_out", "y_out"), first, again):
        if not np.array_equal(_f64(a), _f64(b), equal_nan=True):
            raise CheckFailure(f"a second call with the same key gave another {name} (max "
                               f"difference {np.nanmax(np.abs(_f64(a) - _f64(b))):.3g})")


def check_keyed(subject: Subject, example: Example) -> None:
    first = subject.eager(example)[2:]
    key, x, y = example.inputs()
    for i in range(1, KEYED_TRIES + 1):
        other = subject.call(jax.random.fold_in(key, i), x, y, example.alpha)
        if any(not np.array_equal(_f64(a), _f64(b), equal_nan=True)
               for a, b in zip(first, other)):
            return
    raise CheckFailure(f"{KEYED_TRIES} other keys (jax.random.fold_in(key, i), i = 1.."
                       f"{KEYED_TRIES}) all gave exactly the output of key: the key does not "
                       "reach the method's random draws")


def check_jit(subject: Subject, example: Example) -> None:
    keys, want = subject.members(example)
    if subject.properties.vmap and subject.jit_vmap_matches(example):
        return
    _, x, y = example.inputs()
    for i, key in enumerate(keys):
        got = subject.jitted(key, x, y, jnp.float32(example.alpha))
        _raise_mismatch(f"jax.jit(fn) (alpha traced) with key {i}", got, want[i], example)


def check_vmap(subject: Subject, example: Example) -> None:
    keys, want = subject.members(example)
    if subject.properties.jit and subject.jit_vmap_matches(example):
        return
    _, x, y = example.inputs()
    got = jax.vmap(lambda k: subject.call(k, x, y, example.alpha))(keys)
    for i in range(len(keys)):
        _raise_mismatch(f"jax.vmap(fn) over {len(keys)} keys, member {i},",
                        [np.asarray(v)[i] for v in got], want[i], example)


def check_finite(subject: Subject, example: Example) -> None:
    for name, out in zip(("x_out", "y_out"), subject.eager(example)[2:]):
        bad = ~np.isfinite(_f64(out))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise CheckFailure(f"{name} has {int(bad.sum())} non-finite entries from finite "
                               f"inputs, e.g. {name}[{r}, {c}] = {out[r, c]}")


def check_differentiable(subject: Subject, example: Example) -> None:
    key, x, y = example.inputs()
    rows = subject.eager(example)[2].shape[0]
    cotangent = jnp.asarray(np.random.default_rng(example.seed).standard_normal(
        (rows, example.dim)), jnp.float32)

    def loss(x, key):
        return jnp.sum(cotangent * subject.call(key, x, y, example.alpha)[0].astype(jnp.float32))

    for i in range(GRAD_KEYS):
        grad = _f64(jax.grad(loss)(x, jax.random.fold_in(key, i) if i else key))
        if not np.isfinite(grad).all():
            raise CheckFailure(f"d sum(c * x_out) / dx has {int((~np.isfinite(grad)).sum())} "
                               "non-finite entries")
        if (grad != 0).any():
            return
    raise CheckFailure(f"d sum(c * x_out) / dx is all zero for {GRAD_KEYS} keys: no gradient "
                       "reaches the embeddings (stop_gradient, a cast to integers, or a "
                       "non-differentiable op?)")


def check_label_mass(subject: Subject, example: Example) -> None:
    y = _f64(subject.eager(example)[3])
    lo, hi = subject.properties.label_range
    outside = (y < lo - LABEL_TOL) | (y > hi + LABEL_TOL)
    if outside.any():
        r, c = np.argwhere(outside)[0]
        raise CheckFailure(f"y_out[{r}, {c}] = {y[r, c]:.6g} leaves [{lo:g}, {hi:g}]")
    if subject.properties.label_mass == "soft":
        _check_softened_rows(y, example.batch, subject.softness, subject.negative_mass)
        return
    total = subject.properties.label_mass
    sums = y.sum(axis=1)
    bad = np.abs(sums - total) > LABEL_TOL * max(1.0, total)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise CheckFailure(f"label row {r} sums to {sums[r]:.7g}, not {total:g}")


def _check_softened_rows(y, batch, softness, negative_mass) -> None:
    """Each row is a row of mass 1 softened by the paper's rule (see `parent_weights`)."""
    share = y[:, batch:batch + 1]
    negative = np.abs(y - share) <= SHARE_TOL
    positive = ~negative
    kept = positive & (y > SHARE_TOL)
    clamped = (positive & ~kept).sum(axis=1)
    before = np.where(kept, y + softness, 0.0).sum(axis=1)
    negatives = np.where(negative, y, 0.0).sum(axis=1)
    for r in range(len(y)):
        if negative_mass is None:
            if abs(y[r].sum() - 1) > LABEL_TOL:
                raise CheckFailure(f"label row {r} sums to {y[r].sum():.7g}; mass-conserving "
                                   "softening (negative_mass=None) keeps it at 1")
        elif abs(negatives[r] - negative_mass) > LABEL_TOL:
            raise CheckFailure(
                f"label row {r}: its {int(negative[r].sum())} negative classes hold "
                f"{negatives[r]:.7g} in all, not negative_mass = {negative_mass:g}")
        # A clamped class held at most `softness`: it is what the kept ones fall short of 1.
        low, high = 1 - clamped[r] * softness - LABEL_TOL, 1 + LABEL_TOL
        if clamped[r] == 0:
            low = 1 - LABEL_TOL
        if not low <= before[r] <= high:
            values = _list(y[r][positive[r]])
            raise CheckFailure(
                f"label row {r}: positive classes {values} (+ softness {softness:g} each, "
                f"{clamped[r]} clamped at 0) held {before[r]:.7g} before softening, not 1")


def check_convex_mix(subject: Subject, example: Example) -> None:
    x, _, x_out, y_out = subject.eager(example)
    w = subject.weights(example, _f64(y_out))
    xs = _f64(x)
    want = w @ xs
    bound = X_TOL[example.dtype] * (np.abs(w) @ np.abs(xs)) + 1e-30
    excess = np.abs(_f64(x_out) - want) / bound
    if (excess > 1).any():
        r, c = np.unravel_index(np.argmax(excess), excess.shape)
        parents = np.flatnonzero(w[r])
        blend = " + ".join(f"{w[r, p]:.6g} * x[{p}]" for p in parents)
        raise CheckFailure(
            f"row {r} is not its parents' blend at their label weights: x_out[{r}, {c}] = "
            f"{_f64(x_out)[r, c]:.7g}, but {blend} = {want[r, c]:.7g} (off by "
            f"{abs(_f64(x_out)[r, c] - want[r, c]):.3g}, tolerance {bound[r, c]:.3g})")


def check_coordinate_stitch(subject: Subject, example: Example) -> None:
    x, _, x_out, y_out = subject.eager(example)
    w = subject.weights(example, _f64(y_out))
    xs, out = _f64(x), _f64(x_out)
    for r in range(len(out)):
        parents = np.flatnonzero(w[r])
        a, b = parents[0], parents[-1]
        from_a, from_b = out[r] == xs[a], out[r] == xs[b]
        neither = ~(from_a | from_b)
        if neither.any():
            c = int(np.argmax(neither))
            raise CheckFailure(f"x_out[{r}, {c}] = {out[r, c]:.7g} is neither parent's "
                               f"coordinate (x[{a}, {c}] = {xs[a, c]:.7g}, x[{b}, {c}] = "
                               f"{xs[b, c]:.7g})")
        distinct = xs[a] != xs[b]
        n, k, lam = int(distinct.sum()), int((from_a & distinct).sum()), float(w[r, a])
        lo, hi = scipy.stats.binom.interval(1 - BINOMIAL_LEVEL, n, lam)
        if not lo <= k <= hi:
            raise CheckFailure(
                f"row {r} takes {k} of its {n} coordinates from x[{a}], whose label weight is "
                f"{lam:.6g}: outside [{lo:g}, {hi:g}], the central 1 - {BINOMIAL_LEVEL:g} "
                f"interval of Binomial({n}, {lam:.6g})")


EXAMPLE_CHECKS: dict[str, Callable[[Subject, Example], None]] = {
    "rows": check_rows, "deterministic": check_deterministic, "keyed": check_keyed,
    "jit": check_jit, "vmap": check_vmap, "finite": check_finite,
    "differentiable": check_differentiable, "label_mass": check_label_mass,
    "convex_mix": check_convex_mix, "coordinate_stitch": check_coordinate_stitch,
}
# Checked at `examples.TRANSFORM_SHAPE` only: each new shape compiles the method again.
TRANSFORM_CHECKS = ("jit", "vmap", "differentiable")


# ---------------------------------------------------------------------------------------------
# Checks of distributions, at a fixed seed
# ---------------------------------------------------------------------------------------------


def check_beta_lambda(subject: Subject) -> str:
    found = []
    for alpha in BETA_ALPHAS:
        # The smaller weight of each row: 0 when one parent took all (lambda rounded to 1).
        folded = np.concatenate([np.sort(w, axis=1)[:, -2] for _, _, w in subject.sample(alpha)])
        statistic, p = _ks_folded_beta(folded, alpha)
        if p < KS_P_MIN:
            raise CheckFailure(
                f"at alpha {alpha:g}, min(lambda, 1 - lambda) of {len(folded)} output rows is "
                f"not Beta({alpha:g}, {alpha:g}) folded at 1/2: KS statistic {statistic:.3f}, "
                f"p = {_p(p)} < {KS_P_MIN:g} ({_sample_text(alpha)})")
        found.append(f"p = {_p(p)} at alpha {alpha:g}")
    return f"KS {', '.join(found)} (n = {len(folded)} each; fails below {KS_P_MIN:g})"


def _ks_folded_beta(folded: np.ndarray, alpha: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov of max(folded, FOLD_FLOOR) against the folded Beta with its mass below
    the floor as one atom there: (statistic, p from scipy.stats.kstwo, conservative for an atom).

    scipy.stats.kstest assumes a continuous CDF and would count the atom as a jump of the sample
    alone; here both sides of every sample point are compared.
    """
    values = np.sort(np.maximum(folded, FOLD_FLOOR))
    n = len(values)
    cdf = np.minimum(2 * scipy.stats.beta(alpha, alpha).cdf(values), 1.0)
    cdf_left = np.where(values <= FOLD_FLOOR, 0.0, cdf)
    ecdf = np.searchsorted(values, values, side="right") / n
    ecdf_left = np.searchsorted(values, values, side="left") / n
    statistic = float(max(np.abs(ecdf - cdf).max(), np.abs(ecdf_left - cdf_left).max()))
    return statistic, float(scipy.stats.kstwo.sf(statistic, n))


def check_stitch_statistics(subject: Subject) -> str:
    deviation, variance, chi2, pairs = 0.0, 0.0, 0.0, 0
    for x, x_out, w in subject.sample(STITCH_ALPHA):
        # Each row's parents in index order (equal when one parent took every coordinate).
        first = np.argmax(w > 0, axis=1)
        second = w.shape[1] - 1 - np.argmax((w > 0)[:, ::-1], axis=1)
        two = first != second
        distinct = x[first] != x[second]
        from_first = (x_out == x[first]) & distinct
        lam = w[np.arange(len(w)), first]
        n, k = distinct.sum(axis=1), from_first.sum(axis=1)
        deviation += np.sum(np.where(two, k - n * lam, 0.0))
        variance += np.sum(np.where(two, n * lam * (1 - lam), 0.0))
        for r in range(0, len(w) - 1, 2):
            if not (two[r] and two[r + 1]):
                continue
            both = distinct[r] & distinct[r + 1]
            q = lam[r] * lam[r + 1]
            var = both.sum() * q * (1 - q)
            if var >= INDEPENDENCE_MIN_VAR:
                overlap = np.sum(from_first[r] & from_first[r + 1] & both)
                chi2 += (overlap - both.sum() * q) ** 2 / var
                pairs += 1
    z = deviation / math.sqrt(max(variance, 1e-300))
    if abs(z) > POOLED_Z_MAX:
        raise CheckFailure(
            f"over {_sample_text(STITCH_ALPHA)}, the coordinates taken from each row's first "
            f"parent deviate from its label weight by a pooled z = {z:.2f} (|z| > "
            f"{POOLED_Z_MAX:g}): the mask rate is not the reported lambda")
    p = float(scipy.stats.chi2.sf(chi2, pairs)) if pairs else 1.0
    if p < INDEPENDENCE_P_MIN:
        raise CheckFailure(
            f"over {_sample_text(STITCH_ALPHA)}, the masks of rows 2i and 2i+1 overlap unlike "
            f"independent draws (chi-square {chi2:.0f} on {pairs} pairs, p = {_p(p)} < "
            f"{INDEPENDENCE_P_MIN:g}): is one mask drawn for the whole batch?")
    return f"pooled z = {z:.2f}, mask independence p = {_p(p)} ({_sample_text(STITCH_ALPHA)})"


FIXED_SEED_CHECKS: dict[str, Callable[[Subject], str]] = {
    "beta_lambda": check_beta_lambda, "coordinate_stitch": check_stitch_statistics,
}


def _sample_text(alpha: float) -> str:
    batch, dim = STAT_SHAPE
    return (f"batches of {batch} x {dim} at alpha {alpha:g}, keys fold_in(key({STAT_SEED}), i)")


def _mismatch(what: str, got, want, example: Example) -> str | None:
    """Why `got` (x_out, y_out) is not `want` within the dtype's tolerance, or None."""
    for name, a, b in zip(("x_out", "y_out"), got, want):
        a, b = _f64(a), _f64(b)
        if a.shape != b.shape:
            return f"{what} gave {name} of shape {a.shape}, eager {b.shape}"
        rtol = X_TOL[example.dtype] if name == "x_out" else LABEL_TOL
        scale = np.max(np.abs(b), initial=0.0)
        err = np.abs(a - b)
        if not (err <= rtol * scale + 1e-30).all() and not np.array_equal(a, b, equal_nan=True):
            r, c = np.unravel_index(np.nanargmax(np.where(np.isnan(err), np.inf, err)), err.shape)
            return (f"{what} differs from eager: {name}[{r}, {c}] = {a[r, c]:.7g} vs "
                    f"{b[r, c]:.7g} (tolerance {rtol:g} x max |{name}| = {rtol * scale:.3g})")
    return None


def _raise_mismatch(what: str, got, want, example: Example) -> None:
    message = _mismatch(what, got, want, example)
    if message:
        raise CheckFailure(message)


def _p(p: float) -> str:
    return f"{p:.2g}" if p > 1e-16 else "< 1e-16"


def _f64(value) -> np.ndarray:
    return np.asarray(value).astype(np.float64)


def _list(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in np.asarray(values).ravel()) + ")"
