"""The `embaug` command line: `embaug <command> --config=configs/x.py[:variant] --workdir=DIR`.

Config-driven commands take an ml_collections config file and any `--config.a.b=value`
override (absl flags through `ml_collections.config_flags`). A user's mistake (`UserError`, a
missing file, a read-only or full disk) ends with one message and exit status 2; `--verbose`
shows its traceback and the libraries' start-up logs. Each command's module is imported
only when it runs, so `embaug --help` is instant and a missing optional dependency only
affects the command that needs it.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from embaug_jax import interrupt
from embaug_jax.util import UserError, reuse_freed_memory, split_cpu_into_devices

# The repository's configs/ folder (present in a checkout; an installed wheel has none).
REPO_ROOT = Path(__file__).resolve().parent.parent


class Command(NamedTuple):
    target: str  # "module:function"
    help: str
    config_driven: bool = True  # function(config, workdir) if True, else function(argv)
    default_config: str | None = None
    show: str | None = None  # "module:function" turning the return value into terminal text


COMMANDS: dict[str, Command] = {
    "train": Command(
        "embaug_jax.run.train:train_and_evaluate",
        "train and evaluate a sweep (methods x alphas x softness x trials x seeds) from a config",
        show="embaug_jax.report:format_summary",
    ),
    "extract": Command(
        "embaug_jax.run.extract:run_extraction",
        "embed a data source (text and/or images) into the embedding dataset format",
    ),
    "demo": Command(
        "embaug_jax.run.demo:run_demo",
        "the main job: WordNet -> MiniLM embeddings -> the five Table-1 methods -> table + figures",
        default_config="configs/demo.py",
    ),
    "convert": Command(
        "embaug_jax.embed.convert:main",
        "convert Keras / PyTorch / timm checkpoints to safetensors that load without torch",
        config_driven=False,
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: embaug <command> [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "Config-driven commands take --config=PATH[:variant] --workdir=DIR and",
              "any --config.a.b=value override. `embaug <command> --help` lists the flags."]
    return "\n".join(lines)


def _resolve(target: str) -> Callable:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _split_config_flag(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the value of --config, argv without it); `--config PATH` and `--config=PATH` alike."""
    spec, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            spec, i = argv[i + 1], i + 2
            continue
        if arg.startswith(("--config=", "-config=")):
            spec = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return spec, rest


def _overridden_keys(argv: Sequence[str]) -> list[str]:
    """The config keys given as `--config.a.b=value` (or `--config.a.b value`), in order."""
    keys = []
    for arg in argv:
        m = re.match(r"^--?(no)?config\.([^=]+)", arg)
        if m:
            keys.append(m.group(2))
    return keys


def _flat_keys(config, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        out.append(prefix + key)
        if hasattr(value, "items") and not isinstance(value, (str, bytes)):
            out += _flat_keys(value, f"{prefix}{key}.")
    return out


def _check_override_keys(config, keys: Sequence[str]) -> None:
    """An unknown `--config.a.b` names the closest valid keys instead of a bare KeyError."""
    valid = _flat_keys(config)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            if not close:  # a typo in the last part: compare the leaf names
                leaf = key.rsplit(".", 1)[-1]
                close = [k for k in valid if k.rsplit(".", 1)[-1] in
                         difflib.get_close_matches(leaf, [v.rsplit(".", 1)[-1] for v in valid],
                                                   n=3, cutoff=0.6)][:3]
            hint = (f"did you mean {' or '.join(f'--config.{k}' for k in close)}?" if close
                    else f"the config's top-level keys are {', '.join(config.keys())}.")
            raise UserError(f"--config.{key}: the config has no key {key!r}; {hint}")


def load_config(spec: str):
    """The ConfigDict of `PATH[:variant]`: the file's `get_config(variant)`.

    Raises:
      UserError: the file is missing or is not a file, does not run, has no get_config, rejects
        the variant, raises, or returns no ConfigDict (`configlib.get_config`).
    """
    from embaug_jax import configlib

    return configlib.get_config(spec)


def _run(cmd: Command, config, workdir: str) -> None:
    result = _resolve(cmd.target)(config, workdir)
    if cmd.show and result is not None:
        print(_resolve(cmd.show)(result))


def _run_config_command(name: str, cmd: Command, argv: Sequence[str], *,
                        verbose: bool = False) -> int:
    from absl import flags
    from ml_collections import config_flags

    spec, argv = _split_config_flag(argv)
    if spec is None and cmd.default_config and (REPO_ROOT / cmd.default_config).exists():
        spec = str(REPO_ROOT / cmd.default_config)
    helping = any(a in ("-h", "--help", "--helpfull") for a in argv[1:])
    import ml_collections

    config = load_config(spec) if spec else ml_collections.ConfigDict()
    overrides = _overridden_keys(argv)
    if spec and not helping:
        _check_override_keys(config, overrides)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_dict(
        "config", config, "The config: --config=PATH[:variant] (e.g. `:smoke`), then any "
        "--config.a.b=value override.", flag_values=fv, lock_config=True,
        # Overrides are read from this argv, not sys.argv, so `main([...])` works in-process.
        sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "Output directory (created if missing).", flag_values=fv)
    flags.DEFINE_bool("distributed", False,
                      "Call jax.distributed.initialize() first: one process per host, each "
                      "running the same command. Cloud TPU pods, SLURM, Open MPI and Kubernetes "
                      "are detected automatically; elsewhere pass the three flags below.",
                      flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (--distributed).",
                        flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "Number of processes (--distributed).",
                         flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index (--distributed).",
                         flag_values=fv)
    flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for every process to "
                         "join (--distributed); then every process stops.", flag_values=fv)
    flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds without a heartbeat after which a "
                         "process counts as dead and every process stops (--distributed).",
                         flag_values=fv)
    if helping:
        print(f"usage: embaug {name} --config=PATH[:variant] --workdir=DIR "
              f"[--config.a.b=value ...] [--verbose]\n\n{COMMANDS[name].help}\n\nflags:\n"
              f"{fv.get_help(include_special_flags=False)}")
        return 0
    try:
        fv(list(argv))
    except flags.Error as e:
        print(f"embaug {name}: {e}\nRun `embaug {name} --help` for the flags.", file=sys.stderr)
        return 2
    if spec is None:
        print(f"embaug {name}: --config is required (e.g. --config=configs/table1.py:smoke)",
              file=sys.stderr)
        return 2
    if not fv.workdir:
        print(f"embaug {name}: --workdir is required", file=sys.stderr)
        return 2
    config = fv.config
    # A variant never overrides what the user passed: `:smoke` picks synthetic data, but an
    # explicit --config.data.path means that file (unless --config.data.source says otherwise).
    if ("data.path" in overrides and "data.source" not in overrides
            and "data" in config and "source" in config.data):
        config.data.source = "file"
    # Before JAX starts its backend: a training or extraction config (`cpu_devices`) splits
    # a CPU host into one device per core.
    train_config = config.get("train", config)
    if "cpu_devices" in train_config:
        split_cpu_into_devices(train_config.cpu_devices)
    if not fv.distributed:
        _run(cmd, config, fv.workdir)
        return 0
    from embaug_jax import distributed

    try:
        distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id,
                               initialization_timeout=fv.initialization_timeout,
                               heartbeat_timeout=fv.heartbeat_timeout)
    except ValueError as e:
        print(f"embaug {name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # while waiting for the others to join
        distributed.abandon(_interrupted(name, e, verbose))
    try:
        _run(cmd, config, fv.workdir)
    except BaseException as e:
        # Exit now rather than wait at JAX's shutdown barrier for processes that may be blocked
        # in a collective with this one; they are stopped within the heartbeat timeout.
        import jax

        where = f"process {jax.process_index()} of {jax.process_count()}"
        others = (f"the other processes stop within --heartbeat_timeout={fv.heartbeat_timeout} "
                  "s")
        if not isinstance(e, KeyboardInterrupt) and interrupt.received() is not None:
            # Signalled while blocked in a collective that then failed: its peer stopped on
            # the same signal first. The signal is the cause; the failure only its echo.
            e = interrupt.Interrupted(interrupt.received())
        if isinstance(e, KeyboardInterrupt):
            distributed.abandon(_interrupted(name, e, verbose, f"{where} ", f" ({others})"))
        message = _user_message(e)
        if message is None or verbose:
            traceback.print_exc()
        print(f"embaug {name}: {where} failed ({message or f'{type(e).__name__}: {e}'}); "
              f"{others}.", file=sys.stderr)
        if isinstance(e, SystemExit):
            code = e.code if isinstance(e.code, int) else 1
        else:
            code = e.exit_status if isinstance(e, UserError) else 2 if message else 1
        distributed.abandon(code)
    return 0


def _interrupted(name: str, e: KeyboardInterrupt, verbose: bool, who: str = "",
                 note: str = "") -> int:
    """Prints the one line of a command stopped by SIGINT or SIGTERM; returns its exit status.

    Nothing is left half-written: files are written atomically and checkpoints by orbax, each
    complete or absent, and the workdir's lock (an flock) ends with the process.
    """
    if verbose:
        traceback.print_exception(e)
    signum = interrupt.signal_of(e)
    print(f"embaug {name}: {who}interrupted by {signal.Signals(signum).name}{note}; rerun the "
          "same command to resume.", file=sys.stderr)
    return interrupt.exit_status(signum)


class _OnlyOurInfo(logging.Filter):
    """Passes INFO only from embaug_jax itself, warnings from all but JAX's backend probing.

    Without it the libraries' start-up chatter ("Unable to initialize backend 'tpu'", "a
    CUDA-enabled jaxlib is not installed", orbax's temporary-directory clean-up) buries the
    command's own output; --verbose shows it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        ours = f"{os.sep}embaug_jax{os.sep}" in record.pathname
        if record.levelno >= logging.WARNING:
            return ours or "xla_bridge" not in record.pathname  # "falling back to cpu" etc.
        return ours


def _configure_logging(verbose: bool, debug: bool) -> None:
    from absl import flags, logging as absl_logging

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # else absl prints "Logging before flag parsing ..."
    absl_logging.set_verbosity(absl_logging.DEBUG if debug else absl_logging.INFO)
    absl_logging.use_absl_handler()
    handler = absl_logging.get_absl_handler()
    # The handler keeps the stderr of its creation; in-process reruns (tests, notebooks) may
    # have replaced sys.stderr since.
    handler.python_handler.setStream(sys.stderr)
    for f in [f for f in handler.filters if isinstance(f, _OnlyOurInfo)]:
        handler.removeFilter(f)
    if not (verbose or debug):
        handler.addFilter(_OnlyOurInfo())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose or debug else "2")


def _user_message(e: BaseException) -> str | None:
    """The one-line message of a user's mistake or an environment fault; None for a bug."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError):
        return _os_error_message(e)
    return None


def _os_error_message(e: OSError) -> str | None:
    """A user-facing sentence for an OSError caused by the environment, None for others."""
    where = f" {e.filename}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on device writing{where}. Free some space and run the same "
                "command again: finished work (shards, checkpoints) is kept and reused.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write{where}: {e.strerror or e}. Use a --workdir (or output path) you "
                "can write to.")
    if isinstance(e, FileNotFoundError):
        return str(e) if not e.filename else f"no such file or directory:{where}"
    if isinstance(e, (NotADirectoryError, FileExistsError, IsADirectoryError)):
        return (f"{where.strip() or e}: {e.strerror or e} (a path that should be a folder is a "
                "file, or the other way round).")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `embaug <command> ...`; returns the exit status.

    A mistake in input or configuration (`UserError`, a missing file, a read-only or full disk)
    ends with one message on stderr and status 2 (1 for a damaged file the project wrote,
    `DamagedOutput`); `--verbose` (or `--debug`, which also logs at DEBUG level) shows its
    traceback and the libraries' start-up logs. SIGINT or SIGTERM ends a command with one line
    and status 130 or 143, and a second signal at once (`embaug_jax.interrupt`).
    """
    argv = list(sys.argv if argv is None else argv)
    debug = "--debug" in argv[1:]
    verbose = debug or "--verbose" in argv[1:]
    argv = [a for i, a in enumerate(argv) if i == 0 or a not in ("--verbose", "--debug")]
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name = argv[1]
    if name not in COMMANDS:
        print(f"embaug: unknown command {name!r}; choose one of {', '.join(COMMANDS)}.\n",
              file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    sub_argv = [f"embaug {name}", *argv[2:]]
    # Before JAX starts its CPU backend, whose threads keep the malloc arenas they get: per-batch
    # and per-evaluation buffers then reuse pages instead of faulting fresh ones in.
    reuse_freed_memory()
    _configure_logging(verbose, debug)
    with interrupt.handling_signals(f"embaug {name}"):
        try:
            if not cmd.config_driven:
                return int(_resolve(cmd.target)(sub_argv) or 0)
            return _run_config_command(name, cmd, sub_argv, verbose=verbose)
        except (UserError, OSError) as e:
            message = _user_message(e)
            if message is None:
                raise
            if verbose:
                traceback.print_exception(e)
            print(f"embaug {name}: error: {message}", file=sys.stderr)
            return e.exit_status if isinstance(e, UserError) else 2
        except KeyboardInterrupt as e:
            return _interrupted(name, e, verbose)


if __name__ == "__main__":
    sys.exit(main())
