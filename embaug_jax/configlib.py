"""What config files share: variant strings (`:smoke,method=e_mixup`) and loading config files.

Config files live in `configs/` beside the package and load each other with
`configlib.sibling(__file__, "default")`, by path: they load from any working directory, from
`embaug`, a script or a notebook, with no `sys.path` edit and no `configs` package to import.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import ml_collections

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
_MODULES: dict[Path, ModuleType] = {}


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


def load_module(path: str | os.PathLike) -> ModuleType:
    """Imports a config file by its path (once per process)."""
    path = Path(path).resolve()
    if path not in _MODULES:
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}.")
        spec = importlib.util.spec_from_file_location(f"embaug_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[path] = module
    return _MODULES[path]


def sibling(file: str | os.PathLike, name: str) -> ModuleType:
    """The config file `name` (e.g. "default", "extract/common") beside the file `file`."""
    return load_module(Path(file).parent / f"{name}.py")


def get_config(path_and_variant: str | os.PathLike) -> ml_collections.ConfigDict:
    """A config as `--config=` reads it: "configs/table1.py:smoke" -> get_config("smoke")."""
    path, _, arg = str(path_and_variant).partition(".py:")
    path = path if path.endswith(".py") else path + ".py"
    return load_module(path).get_config(arg or None)
