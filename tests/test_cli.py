"""The `embaug` dispatcher: usage, unknown commands, required flags, `python -m`."""

import signal
import subprocess
import sys

from embaug_jax import cli


def test_usage_lists_every_command(capsys):
    assert cli.main(["embaug"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["embaug", "trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


def test_config_command_requires_config_and_workdir(capsys, tmp_path):
    assert cli.main(["embaug", "train", f"--workdir={tmp_path}"]) == 2
    assert "--config is required" in capsys.readouterr().err
    assert cli.main(["embaug", "train", "--bogus=1"]) == 2
    assert "Unknown command line flag 'bogus'" in capsys.readouterr().err


def test_help_lists_flags(capsys):
    assert cli.main(["embaug", "extract", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--workdir" in out


def test_every_command_target_exists():
    for name, cmd in cli.COMMANDS.items():
        assert callable(cli._resolve(cmd.target)), name
        assert cmd.show is None or callable(cli._resolve(cmd.show)), name


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "embaug_jax"], capture_output=True, text=True,
                          check=True)
    assert "usage: embaug <command>" in proc.stdout


def test_a_command_leaves_the_signal_handlers_as_it_found_them(capsys, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert cli.main(["embaug", "train", f"--workdir={tmp_path}"]) == 2  # no --config
    assert {s: signal.getsignal(s) for s in before} == before
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    assert wakeup == -1
