"""Every config's smoke variant end to end, the command line, and resume through a workdir."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embaug_jax import augment, cli, configlib
from embaug_jax.run import train as run_train
from embaug_jax.train.cadence import Cadence
from embaug_jax.train.members import member_groups, sweep_members
from embaug_jax.workdir import Workdir

REPO = Path(__file__).resolve().parent.parent
default = configlib.load_module(REPO / "configs" / "default.py")
CONFIGS = ["default", *(f"default:method={m}" for m in augment.METHOD_NAMES), "table1",
           "softness", "ablation", "regularization"]


def _load(name, arg="smoke"):
    """configs/NAME.py (NAME may carry its own variants: "default:method=e_mixup"), smoke."""
    name, _, variant = name.partition(":")
    arg = ",".join(filter(None, [arg, variant])) or None
    return configlib.get_config(f"{REPO / 'configs' / name}.py:{arg or ''}")


def test_default_holds_the_papers_settings():
    c = default.get_config()
    assert c.model.hidden == (250, 250) and c.model.dropout == 0.3 and c.model.head == "sigmoid"
    assert (c.optim.optimizer, c.optim.lr_min, c.optim.lr_max) == ("adamw", 3e-4, 3e-3)
    assert c.optim.half_cycle_epochs == 12 and c.optim.weight_decay == 1e-4
    assert c.num_epochs == 576 and c.data.train_fraction == 0.1 and c.threshold == 0.6
    cadence = Cadence.from_config(c)  # derived from num_epochs (tests/test_cadence.py)
    assert c.num_epochs % cadence.chunk_epochs == 0
    assert cadence.chunk_epochs % cadence.eval_every == 0
    assert cadence.checkpoint_every % cadence.chunk_epochs == 0
    run_train.validate_config(c)
    t = _load("table1", None)
    assert t.sweep.methods == augment.METHOD_NAMES and max(t.sweep.alphas) <= 0.5
    assert len(sweep_members(t)) == 5 + 4 * 5 * 5
    s = _load("softness", None)
    assert s.sweep.alphas == (0.3,) and s.sweep.softness == (0.01, 0.05, 0.1, 0.2)
    assert default.get_config("smoke,trials=3").data.trials == 3
    with pytest.raises(ValueError, match="unknown config variant 'smok'"):
        default.get_config("smok")


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_variant_runs_end_to_end(name, tmp_path, fast_compile):
    c = _load(name)
    assert c.data.source == "synthetic" and c.num_epochs <= 16
    results = run_train.train_and_evaluate(c, tmp_path)
    w = Workdir(tmp_path)
    on_disk = json.loads(w.results_json.read_text())
    assert set(on_disk["methods"]) == set(c.sweep.methods)
    for method, entry in on_disk["methods"].items():
        assert 0.0 <= entry["weighted_auc"]["mean"] <= 1.0 and "std" in entry["weighted_auc"]
        assert "mean" in entry["overall_accuracy"] and "mean" in entry["none_accuracy"]
        assert "alpha" in entry
    assert results["methods"].keys() == on_disk["methods"].keys()
    for f in (w.config, w.results_md, *map(w.figure, ("threshold_sweep", "roc",
                                                       "training_curves", "reliability"))):
        assert f.stat().st_size > 0, f
    assert w.figure("softness").exists() == (name == "softness")
    # A method that ran several values of a setting: each metric along it.
    assert w.figure("settings").exists() == (name in ("table1", "softness", "regularization"))
    if name.startswith("default:method="):
        assert c.sweep.methods == (name.partition("=")[2],)
    lines = w.metrics.read_text().splitlines()
    members = sweep_members(c)
    assert len(lines) == len(members) * len(Cadence.from_config(c).eval_epochs)
    def no_nan(name):
        raise AssertionError(f"metrics.jsonl holds {name}: not strict JSON")

    rows = [json.loads(line, parse_constant=no_nan) for line in lines]
    row = rows[-1]
    assert {"member", "method", "alpha", "softness", "trial", "seed", "epoch", "train_loss",
            "overall_accuracy", "none_accuracy"} <= set(row)
    if name == "table1":  # the paper's protocol: the best alpha per method from the grid
        for method in ("e_mixup", "soft_e_stitchup"):
            assert on_disk["methods"][method]["alpha"] in c.sweep.alphas


def test_regularization_tunes_every_method_over_the_same_grid():
    """configs/regularization.py: the control, the four methods and label smoothing, each over
    the one weight decay x dropout grid and one value of its own setting, in three programs."""
    c = _load("regularization", None)
    run_train.validate_config(c)
    assert c.sweep.methods == augment.METHOD_NAMES + ("label_smoothing",)
    members = sweep_members(c)
    grid = sorted(itertools.product((1e-5, 1e-4, 1e-3), (0.1, 0.3, 0.5)))
    for method in c.sweep.methods:
        mine = [m for m in members if m["method"] == method]
        assert len(mine) == len(grid) * c.data.trials == 9 * 5, method
        assert sorted({(m["weight_decay"], m["dropout"]) for m in mine}) == grid, method
        assert len({(m["alpha"], m["softness"], m["smoothing"]) for m in mine}) == 1, method
    assert {m["lr_max"] for m in members} == {c.optim.lr_max}  # not swept: the config's
    assert [g.name for g in member_groups(members)] == ["control", "mixup", "stitchup"]
    smoke = _load("regularization")
    assert len(sweep_members(smoke)) == 6 * 2 * 2 * smoke.data.trials


def test_command_line_with_overrides_and_resume(tmp_path, capsys, fast_compile):
    """`embaug train` killed after one chunk and rerun ends where an uninterrupted run ends."""
    args = ["embaug", "train", "--config=configs/default.py:smoke,method=e_mixup",
            "--config.sweep.alphas=(0.3,)", "--config.data.trials=2"]
    c = _load("default:method=e_mixup")
    c.sweep.alphas = (0.3,)
    stop_after_first_chunk = lambda history, epochs_done: True  # noqa: E731
    assert run_train.train_and_evaluate(c, tmp_path / "killed",
                                        on_chunk=stop_after_first_chunk) is None
    killed_dir, whole_dir = Workdir(tmp_path / "killed"), Workdir(tmp_path / "whole")
    assert not killed_dir.results_json.exists()
    assert cli.main(args + [f"--workdir={tmp_path / 'killed'}"]) == 0
    assert "E-Mixup" in capsys.readouterr().out
    assert cli.main(args + [f"--workdir={tmp_path / 'whole'}"]) == 0
    killed = json.loads(killed_dir.results_json.read_text())
    whole = json.loads(whole_dir.results_json.read_text())
    assert killed["methods"]["e_mixup"]["alpha"] == pytest.approx(0.3)
    for key in ("weighted_auc", "overall_accuracy", "none_accuracy"):
        np.testing.assert_allclose(killed["methods"]["e_mixup"][key]["mean"],
                                   whole["methods"]["e_mixup"][key]["mean"], atol=1e-6)
    assert killed_dir.metrics.read_text() == whole_dir.metrics.read_text()
    # A different sweep in the same workdir must not silently resume the old checkpoints.
    c.sweep.methods = ("e_stitchup",)
    with pytest.raises(ValueError, match="different run.*sweep"):
        run_train.train_and_evaluate(c, tmp_path / "killed")


def test_a_num_epochs_that_divides_nothing_runs_end_to_end(tmp_path, fast_compile):
    """--config.num_epochs=6 on a config that evaluates every 4 and chunks by 8: the last,
    shorter period is trained, evaluated and reported."""
    c = _load("default:method=control")
    c.num_epochs, c.data.trials = 6, 1
    results = run_train.train_and_evaluate(c, tmp_path)
    assert results["methods"]["control"]["weighted_auc"]["n"] == 1
    w = Workdir(tmp_path)
    assert [json.loads(line)["epoch"] for line in w.metrics.read_text().splitlines()] == [4, 6]
    assert json.loads(w.fingerprint.read_text())["eval_every"] == 4


def test_file_source_with_segments(tmp_path, fast_compile):
    """A dataset on disk (the extraction format), mixed segment by segment."""
    c = _load("default:method=soft_e_mixup")
    from embaug_jax.dataset import save_embeddings

    d = run_train.load_data(c)  # the smoke clusters, with segments (8, 16)
    save_embeddings(tmp_path / "emb", d.embeddings, d.labels, d.class_names,
                    segments=[{"name": s.name, "size": s.size} for s in d.segments])
    c.data.source = "file"
    c.data.path = str(tmp_path / "emb")
    c.augment.use_segments = True
    results = run_train.train_and_evaluate(c, tmp_path / "run")
    assert results["methods"]["soft_e_mixup"]["weighted_auc"]["mean"] > 0.7
    saved = json.loads(Workdir(tmp_path / "run").config.read_text())
    assert saved["data"]["path"] == str(tmp_path / "emb") and saved["augment"]["use_segments"]


def test_variant_strings_parse_strictly():
    parse_arg = configlib.parse_arg
    args = parse_arg(" smoke , trials=3,flag=no", smoke=False, trials=0, flag=True)
    assert (args.smoke, args.trials, args.flag) == (True, 3, False)
    for arg, message in [("smoke=maybe", "use true or false"), ("trials", "needs a value"),
                         ("trials=two", "not a valid int"), ("trails=2", "unknown config variant")]:
        with pytest.raises(ValueError, match=message):
            parse_arg(arg, smoke=False, trials=0)


def test_method_variant_and_each_configs_own_variants():
    assert _load("default", "method=control").sweep.methods == ("control",)
    assert default.get_config().sweep.methods == ("soft_e_stitchup",)
    # table1 reads its own arg: the smoke grid comes from `smoke`, not from the epoch count.
    assert _load("table1", "smoke").sweep.alphas == (0.2, 0.4)
    assert _load("table1", "synthetic").sweep.alphas == (0.1, 0.2, 0.3, 0.4, 0.5)
    for name in ("table1", "softness"):  # their sweeps are fixed: no method= variant
        with pytest.raises(ValueError, match="unknown config variant 'method'"):
            _load(name, "method=e_mixup")
    c = _load("default", "method=mixup")
    with pytest.raises(ValueError, match="unknown method 'mixup'"):
        run_train.validate_config(c)


def test_configs_load_without_the_repository_on_sys_path(tmp_path):
    """Only the package is importable (as when installed): config files still load each other."""
    (tmp_path / "embaug_jax").symlink_to(REPO / "embaug_jax")
    code = ("import os, sys; from embaug_jax import configlib; "
            "assert not any(os.path.isdir(os.path.join(p or '.', 'configs')) for p in sys.path); "
            f"c = configlib.get_config({str(REPO / 'configs' / 'demo.py')!r} + ':smoke'); "
            "print(c.train.sweep.methods, c.extract.source.kind)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "soft_e_stitchup" in proc.stdout and "wordnet" in proc.stdout
    with pytest.raises(FileNotFoundError, match="no config file"):
        configlib.get_config(str(tmp_path / "nope.py:smoke"))
