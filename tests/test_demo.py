"""The main job end to end on its smoke config: real WordNet synsets through the real MiniLM,
the five methods in one sweep, the report -- on 1 and on 4 devices, and cached on a rerun."""

import json
from pathlib import Path

import numpy as np
import pytest

from embaug_jax import cli
from embaug_jax.embed.bert.embedder import TextEmbedder
from embaug_jax.run import train as run_train
from embaug_jax.workdir import Workdir

REPO = Path(__file__).resolve().parent.parent
# Compiling dominates the smoke run; the two device counts are compared under the same flags.
pytestmark = [pytest.mark.slow, pytest.mark.needs_wordnet,
              pytest.mark.usefixtures("fast_compile")]
METRICS = ("weighted_auc", "overall_accuracy", "none_accuracy", "ece")


def _demo(workdir: Path, devices: int) -> dict:
    argv = ["embaug", "demo", f"--config={REPO / 'configs' / 'demo.py'}:smoke",
            f"--workdir={workdir}", f"--config.extract.num_devices={devices}",
            f"--config.train.num_devices={devices}", "--config.extract.progress=False"]
    assert cli.main(argv) == 0
    return json.loads(Workdir(workdir).train.results_json.read_text())


def test_demo_smoke_same_metrics_on_one_and_four_devices_and_cached_rerun(
        tmp_path, capsys, monkeypatch):
    one = _demo(tmp_path / "one", 1)
    out = capsys.readouterr().out
    assert "| Control |" in out and "| Soft E-Stitchup |" in out and "figures:" in out
    # Next to Table 1: the weighted AUC by part and the paired differences from the control.
    assert "Weighted AUC by part" in out and "Differences from the control" in out
    assert "Soft E-Stitchup against the control" in out
    train_dir = Workdir(tmp_path / "one").train
    for path in (train_dir.results_md, train_dir.metrics, *map(train_dir.figure, (
            "threshold_sweep", "roc", "training_curves", "reliability"))):
        assert path.stat().st_size > 0, path
    assert one["num_none_examples"] and min(one["num_none_examples"]) > 0
    assert list(one["methods"]) == ["control", "e_mixup", "e_stitchup", "soft_e_mixup",
                                    "soft_e_stitchup"]

    four = _demo(tmp_path / "four", 4)
    for method, entry in one["methods"].items():
        for key in METRICS:
            got, want = (np.asarray(r["methods"][method][key]["values"], float)  # None -> NaN
                         for r in (four, one))
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{method} {key}")

    # A second run embeds nothing and trains nothing more: same results from the caches.
    monkeypatch.setattr(TextEmbedder, "embed", lambda *a, **k: pytest.fail("re-embedded"))
    monkeypatch.setattr(run_train, "run_sweep", lambda *a, **k: pytest.fail("retrained"))
    again = _demo(tmp_path / "one", 1)
    for method, entry in one["methods"].items():
        assert again["methods"][method]["weighted_auc"] == entry["weighted_auc"]
