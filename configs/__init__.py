"""Experiment configs: one `get_config(arg=None)` per file (see each file's docstring)."""

from __future__ import annotations

import ml_collections

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses a config's variant string, "smoke,trials=2" -> {smoke: True, trials: 2}.

    Each key must be one of `defaults`, whose values give the types; a bare key sets a bool.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, eq, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config variant {key!r}; known: {', '.join(defaults)}.")
        kind = type(defaults[key])
        if kind is bool:
            if eq and value.lower() not in _TRUE + _FALSE:
                raise ValueError(f"config variant {key}={value!r}: use true or false.")
            out[key] = not eq or value.lower() in _TRUE
        elif not eq:
            raise ValueError(f"config variant {key!r} needs a value, e.g. {key}="
                             f"{defaults[key]!r}.")
        else:
            try:
                out[key] = kind(value)
            except ValueError as e:
                raise ValueError(f"config variant {key}={value!r}: not a valid "
                                 f"{kind.__name__}.") from e
    return out
