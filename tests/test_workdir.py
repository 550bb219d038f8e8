"""embaug_jax.workdir: the names a run folder's files have (a contract with every workdir already
written), the checks and the lock it delegates to util."""

import ast
import os
from pathlib import Path

import pytest

from embaug_jax.util import UserError
from embaug_jax.workdir import FIGURES, Workdir

PACKAGE = Path(__file__).resolve().parent.parent / "embaug_jax"


def test_the_names_old_workdirs_were_written_with(tmp_path):
    """Renaming any of these orphans every earlier run: it would neither resume nor re-report."""
    w = Workdir(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in (
        w.config, w.fingerprint, w.metrics, w.tensorboard, w.profile, w.checkpoints,
        w.predictions, w.results_json,
        w.results_md, w.embeddings, w.shards, w.models, w.skipped_images(), w.lock_file,
        w.extract.path, w.train.path, w.train.results_json)}
    assert names == {"config.json", "fingerprint.json", "metrics.jsonl", "tensorboard",
                     "profile", "checkpoints",
                     "predictions.npz", "results.json", "results.md", "embeddings", "shards",
                     "models", "skipped_images.json", ".embaug.lock", "extract", "train",
                     "train/results.json"}
    assert list(FIGURES.values()) == ["fig3_threshold_sweep.png", "fig4_roc.png",
                                      "fig5_training_curves.png", "fig6_softness.png",
                                      "reliability.png", "auc_decomposition.png", "oscr.png",
                                      "settings.png"]
    assert w.figure("roc") == tmp_path / "fig4_roc.png"
    with pytest.raises(KeyError, match="no figure 'fig4'.*threshold_sweep, roc"):
        w.figure("fig4")


def test_skipped_images_sit_beside_the_dataset(tmp_path):
    w = Workdir(tmp_path / "w")
    assert w.skipped_images() == w.path / "skipped_images.json"
    assert w.skipped_images(tmp_path / "out" / "ds.npz") == tmp_path / "out" / "skipped_images.json"


def test_a_workdir_is_a_path(tmp_path):
    w = Workdir(str(tmp_path))
    assert isinstance(w.path, Path) and Path(w) == tmp_path and os.fspath(w) == str(tmp_path)
    assert str(w) == str(tmp_path) and Workdir(w) == w and len({w, Workdir(tmp_path)}) == 1
    assert not tmp_path.joinpath("checkpoints").exists()  # naming a file creates nothing


def test_figures_and_checkpoints_present(tmp_path):
    w = Workdir(tmp_path)
    assert w.figures() == [] and not w.has_checkpoints()
    w.checkpoints.mkdir()
    assert not w.has_checkpoints()  # an empty folder holds no checkpoint
    (w.checkpoints / "8").mkdir()
    assert w.has_checkpoints()
    for name in ("reliability", "roc"):
        w.figure(name).write_bytes(b"png")
    (tmp_path / "notes.png").write_bytes(b"png")  # not the report's
    assert w.figures() == [w.figure("roc"), w.figure("reliability")]


def test_run_state_is_what_a_rerun_resumes_from(tmp_path):
    w = Workdir(tmp_path)
    assert w.run_state() == []
    w.checkpoints.mkdir()
    w.predictions.write_bytes(b"npz")
    assert w.run_state() == [w.predictions]  # an empty checkpoints folder holds nothing
    (w.checkpoints / "8").mkdir()
    assert w.run_state() == [w.checkpoints, w.predictions]


def test_check_and_lock_are_utils(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Workdir(tmp_path / "file").check()
    w = Workdir(tmp_path / "w").check()
    with w.lock("train") as held:
        assert held is w and "embaug train" in w.lock_file.read_text()
        with pytest.raises(UserError, match="in use by `embaug train`"):
            with Workdir(tmp_path / "w").lock("extract"):
                pass
    assert not w.path.exists()  # a run that wrote nothing leaves no folder it created
    with w.lock("extract", take=False):  # a process other than 0 of a multi-process run
        assert not w.lock_file.exists()


def test_no_other_module_spells_a_run_folders_file_name():
    """Every path into a run folder comes from Workdir. Names that are also ordinary words
    elsewhere ("train" the command, "config.json" of a BERT folder) are left out of the check."""
    w = Workdir("")
    names = {p.name for p in (w.fingerprint, w.metrics, w.checkpoints, w.predictions,
                              w.results_json, w.results_md, w.shards, w.models,
                              w.skipped_images())} | set(FIGURES.values())
    spelt = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "workdir.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                spelt.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not spelt, "take these paths from embaug_jax.workdir.Workdir:\n" + "\n".join(spelt)
