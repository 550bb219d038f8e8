"""The `embaug` command line: `embaug <command> --config=configs/x.py[:variant] --workdir=DIR`.

Config-driven commands take an ml_collections config file and any `--config.a.b=value`
override (absl flags through `ml_collections.config_flags`). Each command's module is imported
only when it runs, so `embaug --help` is instant and a missing optional dependency only
affects the command that needs it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

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
        "embaug_jax.train.command:train_and_evaluate",
        "train and evaluate a sweep (methods x alphas x softness x trials x seeds) from a config",
        show="embaug_jax.report:format_summary",
    ),
    "extract": Command(
        "embaug_jax.embed.pipeline:run_extraction",
        "embed a data source (text and/or images) into the embedding dataset format",
    ),
    "demo": Command(
        "embaug_jax.demo:run_demo",
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


def _run(cmd: Command, fv) -> None:
    result = _resolve(cmd.target)(fv.config, fv.workdir)
    if cmd.show and result is not None:
        print(_resolve(cmd.show)(result))


def _run_config_command(name: str, cmd: Command, argv: Sequence[str]) -> int:
    from absl import flags, logging
    from ml_collections import config_flags

    fv = flags.FlagValues()
    default = None
    if cmd.default_config and (REPO_ROOT / cmd.default_config).exists():
        default = str(REPO_ROOT / cmd.default_config)
    config_flags.DEFINE_config_file(
        "config", default, "Path to a config file, optionally `:variant` (e.g. `:smoke`).",
        flag_values=fv, lock_config=True,
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
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(f"usage: embaug {name} --config=PATH[:variant] --workdir=DIR "
              f"[--config.a.b=value ...]\n\n{COMMANDS[name].help}\n\nflags:\n"
              f"{fv.get_help(include_special_flags=False)}")
        return 0
    try:
        fv(list(argv))
    except flags.Error as e:
        print(f"embaug {name}: {e}\nRun `embaug {name} --help` for the flags.", file=sys.stderr)
        return 2
    if fv["config"].value is None:
        print(f"embaug {name}: --config is required (e.g. --config=configs/table1.py:smoke)",
              file=sys.stderr)
        return 2
    if not fv.workdir:
        print(f"embaug {name}: --workdir is required", file=sys.stderr)
        return 2
    logging.set_verbosity(logging.INFO)
    logging.use_absl_handler()
    if not fv.distributed:
        _run(cmd, fv)
        return 0
    from embaug_jax import distributed

    try:
        distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id,
                               initialization_timeout=fv.initialization_timeout,
                               heartbeat_timeout=fv.heartbeat_timeout)
    except ValueError as e:
        print(f"embaug {name}: {e}", file=sys.stderr)
        return 2
    try:
        _run(cmd, fv)
    except BaseException as e:
        # Exit now rather than wait at JAX's shutdown barrier for processes that may be blocked
        # in a collective with this one; they are stopped within the heartbeat timeout.
        import traceback

        import jax

        traceback.print_exc()
        print(f"embaug {name}: process {jax.process_index()} of {jax.process_count()} failed "
              f"({type(e).__name__}: {e}); the other processes stop within "
              f"--heartbeat_timeout={fv.heartbeat_timeout} s.", file=sys.stderr)
        if isinstance(e, SystemExit):
            code = e.code if isinstance(e.code, int) else 1
        else:
            code = 130 if isinstance(e, KeyboardInterrupt) else 1
        distributed.abandon(code)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
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
    if not cmd.config_driven:
        return int(_resolve(cmd.target)(sub_argv) or 0)
    return _run_config_command(name, cmd, sub_argv)


if __name__ == "__main__":
    sys.exit(main())
