"""One row per augmentation method and one per swept setting, registered by name.

Every table of methods or settings in the package is derived from these rows: the traced form's
method parameters and the kinds' members (`embaug_jax.augment`), the sweep's members and the
checks of a config's grids (`embaug_jax.train`), the default grids (configs/default.py), the
method lists of configs/table1.py and configs/ablation.py, and the report's display names,
variant names and columns. A new method or setting is one row, and nothing else is edited.

  registry.register(Setting(name="alpha", grid="alphas", range=Range(low=0, low_closed=False),
                            default=(0.2,), ...))

  @registry.register_method(display="E-Mixup", kind="mixup", reads=("alpha",), ...)
  def e_mixup(key, x, y, alpha, ...): ...

The built-in rows live beside their code: importing `embaug_jax.augment` registers the paper's
methods, the ablation baselines and their settings (every stage above it imports it). A method
of an existing kind needs no engine change: a `transform` of the kind's rows is applied to the
method's own members inside the kind's one compiled program. A method that computes something
no kind computes needs a new kind, which is code (`embaug_jax.augment.traced`).

Settings that every method reads -- the learning-rate cycle, the weight decay, the dropout rate
-- are rows too, with a `config_key`: `embaug_jax.train.optim` registers them, and a member takes
the config's value (config.optim / config.model) unless config.sweep sets a grid for them.

Rows are frozen dataclasses with keyword-only fields, so fields can be added later without
breaking a user's rows (as `Method.properties` and `Setting.config_key` were).
`temporary(...)` registers rows for a `with` block (tests, notebooks) and then restores the
registry as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = [
    "KINDS",
    "Method",
    "Range",
    "Setting",
    "UnknownNameError",
    "display_name",
    "method",
    "method_index",
    "method_names",
    "methods",
    "register",
    "register_method",
    "setting",
    "settings",
    "temporary",
]

# The compiled programs a method can join (`Method.kind`); members of one kind share shapes and
# code, so a sweep compiles one program per kind present:
#   control   the batch's B rows as they are
#   mixup     B/2 pairs (under the paper's halving) mixed as lam * x_a + (1 - lam) * x_b
#   stitchup  B/2 pairs, each element from x_a with probability lam
#   manifold  B/2 pairs the model mixes after its first hidden layer
KINDS = ("control", "mixup", "stitchup", "manifold")
# The kinds that draw lam ~ Beta(alpha, alpha) for every pair: their methods read "alpha".
_PAIR_KINDS = ("mixup", "stitchup", "manifold")
# Keys a member record (`train.members.sweep_members`, metrics.jsonl) or a method's traced
# parameters (`augment.MethodParams`) already use, and the other keys under config.sweep: a
# setting or grid of that name would overwrite them.
_RESERVED = ("method", "trial", "seed", "member", "epoch", "mix", "soft", "static")
_RESERVED_GRIDS = ("methods", "seeds")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_CONFIG_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+\Z")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered: a KeyError for lookups that is also a ValueError."""

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def naming(cls, what: str, name: Any, known: Iterable[str]) -> UnknownNameError:
        """The error for `name`, listing what is known and the closest names."""
        known = list(known)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        return cls(f"unknown {what} {name!r}; use one of {', '.join(map(repr, known))}{hint}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Range:
    """The finite values a setting may take: between `low` and `high`, each end included
    unless `..._closed` is False."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True

    def __contains__(self, value: float) -> bool:
        v = float(value)
        if not math.isfinite(v):
            return False
        above = v >= self.low if self.low_closed else v > self.low
        below = v <= self.high if self.high_closed else v < self.high
        return above and below

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        if math.isinf(self.low):
            return f"{'<=' if self.high_closed else '<'} {self.high:g}"
        return (f"in {'[' if self.low_closed else '('}{self.low:g}, {self.high:g}"
                f"{']' if self.high_closed else ')'}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    """A setting a sweep varies: each value of its grid is a member of the sweep.

    Attributes:
      name: the member key and the method parameter, e.g. "alpha".
      grid: its grid's key under config.sweep, e.g. "alphas".
      range: the values it may take.
      note: what a message adds after the range, e.g. "the Beta(alpha, alpha) parameter".
      default: the grid configs/default.py starts with (its first value is also
        `augment.method_params`' default); empty for a setting with a `config_key`, whose grid
        starts unset.
      traced: True: a traced value of each member, so members that differ in it share one
        compiled program. False: it changes shapes or code paths, so each value gets a program
        of its own and reaches the method's transform as a Python number.
      column: a column of its own in the report's tables and always part of a variant's name
        (the paper's alpha and softness); other settings are listed together and named only
        when not 0.
      config_key: set for a setting that every method reads (an optimisation or model
        setting, not an augmentation's), e.g. "optim.weight_decay": the config field whose
        value every member takes when config.sweep sets no grid for it. Such a setting is in
        no method's `reads`, and is part of a variant's name only when the sweep ran more
        than one value of it.
    """

    name: str
    grid: str
    range: Range
    note: str = ""
    default: tuple[float, ...]
    traced: bool = True
    column: bool = False
    config_key: str = ""

    def __post_init__(self):
        if isinstance(self.default, (list, tuple)):
            object.__setattr__(self, "default", tuple(self.default))

    @property
    def text(self) -> str:
        """The range as a message prints it: "> 0 (the Beta(alpha, alpha) parameter)"."""
        return f"{self.range} ({self.note})" if self.note else str(self.range)

    @property
    def every_method(self) -> bool:
        """Whether every method reads it (it has a `config_key`)."""
        return bool(self.config_key)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """An augmentation method a sweep can run.

    Attributes:
      name: its name in configs, member records and variant names, e.g. "e_mixup".
      display: its name in tables and figures, e.g. "E-Mixup".
      kind: the compiled program it joins, one of `KINDS`.
      reads: the settings it reads, in the order its grids are swept (the first outermost).
        Its members hold 0 for every other method's setting. The settings every method reads
        (`Setting.every_method`) are never listed.
      reference: where it is defined: the paper's section, or the baseline's source.
      soft: its labels are softened by `soften_labels` at its softness (the paper's soft
        variants), after the kind's rows and the transform.
      transform: `transform(key, x, y, params, *, class_mask) -> (x, y)`, a traced change of
        the kind's rows (x [R, D], y [R, C] float) that the kind's program applies to this
        method's members only; params is the member's `augment.MethodParams` (its settings,
        traced, and its untraced settings as numbers). `key` is the rows' last key, which the
        built-in transforms split in two (Gaussian noise takes the first half, feature dropout
        the second): a new transform derives its own, e.g. `jax.random.fold_in(key, 7)`.
        Under `jax.vmap` the transform also runs on other members' rows, whose results are
        discarded. Not for the "manifold" kind, whose rows are pairs the model mixes.
      function: the named function, key first, e.g. `e_mixup(key, x, y, alpha, ...)`.
      tags: free labels; the built-ins carry "paper" (the paper's five methods, Table 1) or
        "baseline" (the ablation's), which configs/table1.py and ablation.py list.
      properties: what `embaug_jax.testing.check_augmentation` checks of the rows the sweep
        trains on, e.g. ("rows=half", "deterministic", "keyed", "jit", "vmap", "finite",
        "differentiable", "label_mass=1", "convex_mix", "beta_lambda"); the names are
        `embaug_jax.testing.PROPERTIES`'s, kept as plain strings so a row needs no import.
    """

    name: str
    display: str
    kind: str
    reads: tuple[str, ...] = ()
    reference: str = ""
    soft: bool = False
    transform: Callable | None = None
    function: Callable | None = None
    tags: frozenset[str] = frozenset()
    properties: tuple[str, ...] = ()

    def __post_init__(self):
        # Lists and sets are accepted for convenience; the row keeps hashable tuples.
        if isinstance(self.reads, (list, tuple)):
            object.__setattr__(self, "reads", tuple(self.reads))
        if isinstance(self.properties, (list, tuple, set, frozenset)):
            object.__setattr__(self, "properties", tuple(self.properties))
        if isinstance(self.tags, (list, tuple, set)):
            object.__setattr__(self, "tags", frozenset(self.tags))


Row = TypeVar("Row", Method, Setting)
F = TypeVar("F", bound=Callable)

_METHODS: dict[str, Method] = {}
_SETTINGS: dict[str, Setting] = {}


def _check_setting(row: Setting) -> None:
    if not (isinstance(row.name, str) and _NAME.match(row.name)) or row.name in _RESERVED:
        raise ValueError(f"setting name {row.name!r} must be an identifier other than "
                         f"{', '.join(_RESERVED)}")
    if not (isinstance(row.grid, str) and _NAME.match(row.grid)) or row.grid in _RESERVED_GRIDS:
        raise ValueError(f"setting {row.name!r}: grid {row.grid!r} must be an identifier other "
                         f"than {', '.join(_RESERVED_GRIDS)} (it is a key under config.sweep)")
    for other in _SETTINGS.values():
        if other.name != row.name and row.grid in (other.grid, other.name):
            raise ValueError(f"setting {row.name!r}: grid {row.grid!r} is already setting "
                             f"{other.name!r}'s")
    if not isinstance(row.range, Range):
        raise TypeError(f"setting {row.name!r}: range must be a Range, got {row.range!r}")
    if row.config_key and not (isinstance(row.config_key, str)
                               and _CONFIG_KEY.match(row.config_key)):
        raise ValueError(f"setting {row.name!r}: config_key {row.config_key!r} must be a dotted "
                         "config field such as 'optim.weight_decay'")
    default = tuple(row.default) if isinstance(row.default, (tuple, list)) else None
    if default is None or any(isinstance(v, bool) or not isinstance(v, (int, float))
                              or v not in row.range for v in default):
        raise ValueError(f"setting {row.name!r}: default must be a tuple of numbers "
                         f"{row.range}, got {row.default!r}")
    if bool(default) == bool(row.config_key):
        raise ValueError(f"setting {row.name!r}: " + (
            f"a setting with a config_key takes its value from config.{row.config_key} unless "
            f"a grid is set, so its default grid must be empty, got {row.default!r}"
            if row.config_key else "default must be a non-empty tuple of numbers "
            f"{row.range}, got {row.default!r}"))


def _check_method(row: Method) -> None:
    where = f"method {row.name!r}"
    if not (isinstance(row.name, str) and _NAME.match(row.name)):
        raise ValueError(f"method name {row.name!r} must be an identifier (it becomes part of "
                         "variant names such as 'e_mixup/alpha=0.2/softness=0')")
    if not isinstance(row.display, str) or not row.display:
        raise ValueError(f"{where}: display must be a non-empty name, got {row.display!r}")
    if row.kind not in KINDS:
        raise UnknownNameError.naming("kind", row.kind, KINDS)
    if isinstance(row.reads, str) or len(set(row.reads)) != len(tuple(row.reads)):
        raise ValueError(f"{where}: reads must be a tuple of distinct setting names, got "
                         f"{row.reads!r}")
    for name in row.reads:
        if name not in _SETTINGS:
            raise UnknownNameError.naming(f"setting (read by {where})", name, _SETTINGS)
        if _SETTINGS[name].every_method:
            raise ValueError(f"{where}: {name!r} is read by every method (it has a config_key); "
                             "leave it out of reads")
    if row.kind in _PAIR_KINDS and "alpha" not in row.reads:
        raise ValueError(f"{where}: the {row.kind} kind draws lam ~ Beta(alpha, alpha) for "
                         "every pair, so the method must read 'alpha'")
    if row.soft and "softness" not in row.reads:
        raise ValueError(f"{where}: soft=True softens labels by the member's softness, so the "
                         "method must read 'softness'")
    if row.transform is not None and not callable(row.transform):
        raise TypeError(f"{where}: transform must be callable, got {row.transform!r}")
    if row.transform is not None and row.kind == "manifold":
        raise ValueError(f"{where}: the manifold kind's rows are pairs the model mixes; a "
                         "transform of them is not supported")
    if row.function is not None and not callable(row.function):
        raise TypeError(f"{where}: function must be callable, got {row.function!r}")
    if not isinstance(row.tags, frozenset):
        raise TypeError(f"{where}: tags must be a frozenset, got {row.tags!r}")
    if isinstance(row.properties, str) or not all(isinstance(p, str) for p in row.properties):
        raise TypeError(f"{where}: properties must be a tuple of names such as 'jit' or "
                        f"'label_mass=1', got {row.properties!r}")


def register(row: Row, *, replace: bool = False) -> Row:
    """Registers a `Method` or `Setting` row under its name and returns it.

    A method's settings must be registered first. Registering a name again is an error unless
    the row is the same or `replace=True` (which keeps the name's place in the order).
    """
    if isinstance(row, Setting):
        table, check = _SETTINGS, _check_setting
    elif isinstance(row, Method):
        table, check = _METHODS, _check_method
    else:
        raise TypeError(f"register takes a Method or Setting row, got {type(row).__name__}")
    check(row)
    old = table.get(row.name)
    if old is not None and old != row and not replace:
        raise ValueError(f"{type(row).__name__.lower()} {row.name!r} is already registered "
                         f"(as {old!r}); pass replace=True to replace it")
    table[row.name] = row
    return row


def register_method(*, name: str | None = None, tags: Iterable[str] = (),
                    **fields: Any) -> Callable[[F], F]:
    """A decorator that registers the function it decorates as a `Method` row's `function`
    (named after the function unless `name` is given); `fields` are the row's other fields."""

    def decorate(function: F) -> F:
        register(Method(name=name or function.__name__, function=function, tags=tuple(tags),
                        **fields))
        return function

    return decorate


@contextlib.contextmanager
def temporary(*rows: Method | Setting, replace: bool = False) -> Iterator[None]:
    """Registers `rows` (settings before the methods that read them) for a `with` block, then
    restores the registry as it was, dropping anything else registered inside the block."""
    saved = dict(_METHODS), dict(_SETTINGS)
    try:
        for row in sorted(rows, key=lambda r: isinstance(r, Method)):
            register(row, replace=replace)
        yield
    finally:
        for table, old in zip((_METHODS, _SETTINGS), saved):
            table.clear()
            table.update(old)


def method(name: str) -> Method:
    """The registered method `name` (an `UnknownNameError` naming close matches if none)."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise UnknownNameError.naming("method", name, _METHODS) from None


def setting(name: str) -> Setting:
    """The registered setting `name` (an `UnknownNameError` naming close matches if none)."""
    try:
        return _SETTINGS[name]
    except (KeyError, TypeError):
        raise UnknownNameError.naming("setting", name, _SETTINGS) from None


def methods(*, tag: str | None = None, kind: str | None = None) -> tuple[Method, ...]:
    """The registered methods in registration order, optionally only those with `tag` or of
    `kind`."""
    return tuple(m for m in _METHODS.values()
                 if (tag is None or tag in m.tags) and (kind is None or m.kind == kind))


def method_names(*, tag: str | None = None, kind: str | None = None) -> tuple[str, ...]:
    """The names of `methods(tag=, kind=)`."""
    return tuple(m.name for m in methods(tag=tag, kind=kind))


def method_index(name: str) -> int:
    """`name`'s place in registration order: the method's id in its traced parameters."""
    method(name)
    return list(_METHODS).index(name)


def settings(*, traced: bool | None = None,
             every_method: bool | None = None) -> tuple[Setting, ...]:
    """The registered settings in registration order, optionally only the traced or untraced
    ones, and only those every method reads (`Setting.every_method`) or only the methods' own."""
    return tuple(s for s in _SETTINGS.values()
                 if (traced is None or s.traced == traced)
                 and (every_method is None or s.every_method == every_method))


def display_name(name: str) -> str:
    """A method's display name, or `name` itself for a method not registered here (e.g. in
    the saved predictions of a run that registered its own)."""
    row = _METHODS.get(name)
    return row.display if row is not None else name
