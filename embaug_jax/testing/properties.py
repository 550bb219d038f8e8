"""The properties an augmentation declares, and their parsed form the checks read.

A declaration is plain data, a tuple of names (some with a parameter after "="), so a method's
registry row can carry it without importing this package:

    ("rows=half", "deterministic", "keyed", "jit", "vmap", "finite", "differentiable",
     "label_mass=1", "convex_mix", "beta_lambda")

`Properties.parse` validates a declaration (an unknown name gets its close matches) into the typed
`Properties` that `check_augmentation` runs. `PROPERTIES` says what each name means.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Literal

__all__ = ["PROPERTIES", "Properties"]

# name -> what it checks, in the order the report lists them. "dtypes" and "label_range" set
# the domain the others are checked over rather than being checks of their own.
PROPERTIES = {
    "rows": "rows=half|all: x_out is [R, D] in x's dtype and y_out [R, C] in y's dtype, with "
            "R = B/2 (half: the paper's pairing) or B (all)",
    "dtypes": "dtypes=float32,bfloat16: the embedding dtypes examples are drawn in (default: "
              "both); labels are float32 one-hot rows",
    "deterministic": "the same key gives the same output, bit for bit",
    "keyed": "different keys give different outputs (a method that draws randomness)",
    "jit": "jax.jit(fn), alpha traced, equals fn run eagerly",
    "vmap": "jax.vmap(fn) over a batch of keys equals a loop over the keys",
    "finite": "finite embeddings (magnitudes 1e-3 to 1e3) give finite outputs",
    "differentiable": "the gradient of sum(c * x_out) with respect to x is finite and not all "
                      "zero",
    "label_mass": "label_mass=<total>|soft: every label row sums to <total> (1 for mixing), or, "
                  "with soft, is a row of total mass 1 softened by the paper's rule (section "
                  "2.4) at the call's softness (0.05) and negative_mass (1.0); no entry leaves "
                  "label_range",
    "label_range": "label_range=<lo>,<hi>: where label entries must stay (default 0,1)",
    "convex_mix": "each output row is w_a x_a + w_b x_b, its parents weighted by their label "
                  "weights (the reported lambda)",
    "coordinate_stitch": "each output coordinate is one parent's, and the count taken from a "
                         "parent is Binomial(n, its label weight); masks are independent "
                         "across rows",
    "beta_lambda": "the label weights of the parents follow Beta(alpha, alpha) (KS test)",
}
_WITH_VALUE = ("rows", "dtypes", "label_mass", "label_range")
_DOMAIN = ("dtypes", "label_range")
_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Properties:
    """A parsed declaration: which checks run, and the domain they run over.

    Build it with `Properties.parse(declaration)`; `declaration()` gives the names back.
    """

    rows: Literal["half", "all"] | None = None
    dtypes: tuple[str, ...] = _DTYPES
    deterministic: bool = False
    keyed: bool = False
    jit: bool = False
    vmap: bool = False
    finite: bool = False
    differentiable: bool = False
    label_mass: float | Literal["soft"] | None = None
    label_range: tuple[float, float] = (0.0, 1.0)
    convex_mix: bool = False
    coordinate_stitch: bool = False
    beta_lambda: bool = False

    @classmethod
    def parse(cls, declaration: Iterable[str] | Properties) -> Properties:
        """Validates a declaration (names, some as "name=value") into `Properties`.

        Raises:
          ValueError: an unknown name (with close matches), a missing or malformed value, a
            repeated name, or checks that cannot be combined.
        """
        if isinstance(declaration, Properties):
            return declaration
        if isinstance(declaration, str):
            raise ValueError(f"properties must be a collection of names, got the string "
                             f"{declaration!r}; write ({declaration!r},)")
        fields: dict[str, object] = {}
        for item in declaration:
            name, has_value, value = str(item).partition("=")
            name, value = name.strip(), value.strip()
            if name not in PROPERTIES:
                close = difflib.get_close_matches(name, PROPERTIES, n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ValueError(f"unknown property {name!r}{hint} Known: "
                                 f"{', '.join(PROPERTIES)}")
            if name in fields:
                raise ValueError(f"property {name!r} is declared twice")
            if (name in _WITH_VALUE) != bool(has_value):
                raise ValueError(f"property {name!r} " + (
                    f"needs a value: {PROPERTIES[name].split(':')[0]}" if name in _WITH_VALUE
                    else "takes no value"))
            fields[name] = _parse_value(name, value) if has_value else True
        properties = cls(**fields)
        properties._check_combination()
        return properties

    def declaration(self) -> tuple[str, ...]:
        """The declared names in `PROPERTIES` order, parameters included (domain defaults left
        out), e.g. ("rows=half", "deterministic", "label_mass=1")."""
        names = []
        for name in PROPERTIES:
            value = getattr(self, name)
            if name == "dtypes":
                if value != _DTYPES:
                    names.append(f"dtypes={','.join(value)}")
            elif name == "label_range":
                if value != (0.0, 1.0):
                    names.append(f"label_range={value[0]:g},{value[1]:g}")
            elif name in ("rows", "label_mass"):
                if value is not None:
                    names.append(f"{name}={value if value == 'soft' else _number(value)}")
            elif value:
                names.append(name)
        return tuple(names)

    def checks(self) -> tuple[str, ...]:
        """The declared checks in report order: `declaration()` without the settings of the
        domain they run over (dtypes, label_range)."""
        return tuple(n for n in self.declaration() if n.partition("=")[0] not in _DOMAIN)

    def _check_combination(self) -> None:
        geometry = [n for n in ("convex_mix", "coordinate_stitch", "beta_lambda")
                    if getattr(self, n)]
        if geometry and self.label_mass is None:
            raise ValueError(f"{' and '.join(geometry)} recover each output's parents and lambda "
                             "from its labels: declare label_mass too")
        if self.label_range != (0.0, 1.0) and self.label_mass is None:
            raise ValueError("label_range bounds the entries label_mass checks: declare "
                             "label_mass too")
        if self.convex_mix and self.coordinate_stitch:
            raise ValueError("convex_mix and coordinate_stitch exclude each other: an output "
                             "coordinate is a blend of its parents or one parent's, not both")


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _parse_value(name: str, value: str):
    if name == "rows":
        if value not in ("half", "all"):
            raise ValueError(f"rows must be 'half' (B/2 output rows) or 'all' (B rows), got "
                             f"{value!r}")
        return value
    if name == "dtypes":
        dtypes = tuple(v.strip() for v in value.split(",") if v.strip())
        if not dtypes or any(d not in _DTYPES for d in dtypes):
            raise ValueError(f"dtypes must be a comma-separated subset of {','.join(_DTYPES)}, "
                             f"got {value!r}")
        return dtypes
    if name == "label_mass":
        if value == "soft":
            return value
        try:
            total = float(value)
        except ValueError:
            raise ValueError(f"label_mass must be a number (the row total, e.g. 1) or 'soft', "
                             f"got {value!r}") from None
        if not total > 0:
            raise ValueError(f"label_mass must be > 0, got {value!r}")
        return total
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"label_range must be '<lo>,<hi>', got {value!r}") from None
    if not lo < hi:
        raise ValueError(f"label_range needs lo < hi, got {value!r}")
    return lo, hi
