"""What config files share: variant strings (`:smoke,method=e_mixup`) and loading config files.

Config files live in `configs/` beside the package and load each other with
`configlib.sibling(__file__, "default")`, by path: they load from any working directory, from
`embaug`, a script or a notebook, with no `sys.path` edit and no `configs` package to import.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import traceback
from pathlib import Path
from types import ModuleType

import ml_collections

from embaug_jax.util import UserError, check_input

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
_MODULES: dict[Path, ModuleType] = {}
_LOADING: set[str] = set()  # the config files being run now (one loads another by `sibling`)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses a config's variant string, "smoke,trials=2" -> {smoke: True, trials: 2}.

    Each key must be one of `defaults`, whose values give the types; a bare key sets a bool.
    Anything else is a UserError naming the known keys or the expected type.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, eq, value = item.partition("=")
        if key not in defaults:
            raise UserError(f"unknown config variant {key!r}; known: {', '.join(defaults)}.")
        kind = type(defaults[key])
        if kind is bool:
            if eq and value.lower() not in _TRUE + _FALSE:
                raise UserError(f"config variant {key}={value!r}: use true or false.")
            out[key] = not eq or value.lower() in _TRUE
        elif not eq:
            raise UserError(f"config variant {key!r} needs a value, e.g. {key}="
                             f"{defaults[key]!r}.")
        else:
            try:
                out[key] = kind(value)
            except ValueError as e:
                raise UserError(f"config variant {key}={value!r}: not a valid "
                                 f"{kind.__name__}.") from e
    return out


def load_module(path: str | os.PathLike) -> ModuleType:
    """Imports a config file by its path (once per process).

    Raises:
      FileNotFoundError: nothing is at `path`.
      UserError: `path` is not a regular file (a directory, a named pipe), or the file does not
        run: a syntax error (naming its line), or an exception while it runs (naming the line
        of a config file it came from).
    """
    path = check_input(path, "config file", missing=f"no config file at {path}: it does not "
                       "exist. Config files live in configs/ (e.g. "
                       "--config=configs/default.py:smoke).").resolve()
    if path not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"embaug_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        _LOADING.add(str(path))
        try:
            spec.loader.exec_module(module)
        except UserError:
            raise  # a config file it loads (`sibling`) has said what is wrong with it
        except SyntaxError as e:  # IndentationError and TabError too
            code = f" ({e.text.strip()!r})" if e.text and e.text.strip() else ""
            raise UserError(f"config file {e.filename or path}, line {e.lineno}: {e.msg}{code}. "
                            "Fix the file's Python syntax.") from e
        except Exception as e:
            raise UserError(f"config file {path} failed while loading: {_raised(e)}. Fix the "
                            "file (--verbose shows the traceback).") from e
        finally:
            _LOADING.discard(str(path))
        _MODULES[path] = module
    return _MODULES[path]


def _raised(e: BaseException) -> str:
    """"ZeroDivisionError: division by zero at line 3 of configs/x.py": the exception, and the
    innermost line of a config file on its way up."""
    files = _LOADING | {str(p) for p in _MODULES}
    lines = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(e.__traceback__)
             if frame.filename in files]
    where = f" at line {lines[-1][1]} of {lines[-1][0]}" if lines else ""
    return f"{type(e).__name__}: {e}{where}"


def sibling(file: str | os.PathLike, name: str) -> ModuleType:
    """The config file `name` (e.g. "default", "extract/common") beside the file `file`."""
    return load_module(Path(file).parent / f"{name}.py")


def get_config(path_and_variant: str | os.PathLike) -> ml_collections.ConfigDict:
    """A config as `--config=` reads it: "configs/table1.py:smoke" -> get_config("smoke").

    A path without ".py" names the .py file when nothing is at the path itself.

    Raises:
      FileNotFoundError: no file at the path.
      UserError: anything else the user can fix, in one message naming the file: it is not a
        regular file, does not run (`load_module`), has no `get_config`, rejects the variant,
        raises, or returns something other than a ConfigDict.
    """
    path, dot_py, variant = str(path_and_variant).partition(".py:")
    path = os.path.expanduser(path + dot_py[:3])
    if not path.endswith(".py") and not os.path.lexists(path):
        path += ".py"
    module = load_module(path)
    make = getattr(module, "get_config", None)
    if not callable(make):
        raise UserError(f"config file {path} defines no get_config(); every config file has one "
                        "(see configs/default.py).")
    takes_variant = bool(inspect.signature(make).parameters)
    if variant and not takes_variant:
        raise UserError(f"config file {path}: its get_config() takes no variant; drop "
                        f"':{variant}' from --config.")
    try:
        config = make(variant or None) if takes_variant else make()
    except UserError as e:  # parse_arg's: an unknown or malformed variant
        raise UserError(f"config file {path}: {e}") from e
    except Exception as e:
        call = f"get_config({variant!r})" if variant else "get_config()"
        raise UserError(f"config file {path}: {call} raised {_raised(e)}. Fix the config file "
                        "(--verbose shows the traceback).") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"config file {path}: get_config() returned a {type(config).__name__}, "
                        "not an ml_collections.ConfigDict; build the config as one (a dict "
                        "converts with ml_collections.ConfigDict(d)).")
    return config
