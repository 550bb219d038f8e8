"""The study scripts in experiments/ on their smoke configs: Table 1 trains once, the
Figure 3-5 scripts read the same finished sweep, and their CSVs agree with results.json."""

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from embaug_jax.workdir import Workdir

# Compiling dominates these small runs; their checks compare the scripts' outputs with the
# same run's results.json, never with numbers from elsewhere.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_compile")]
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return lambda name: importlib.import_module(name)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table1_and_the_figure_scripts_share_one_sweep(tmp_path, scripts, capsys, monkeypatch):
    workdir = tmp_path / "table1"
    scripts("table1").main(["--smoke", f"--workdir={workdir}"])
    assert "<- best" in capsys.readouterr().out
    results = json.loads(Workdir(workdir).results_json.read_text())

    # The readers re-report the finished sweep from its predictions.npz: the engine never runs
    # (not even to restore a checkpoint).
    from embaug_jax.run import train as run_train
    monkeypatch.setattr(run_train, "run_sweep",
                        lambda *a, **k: pytest.fail("a finished sweep went back to the engine"))

    scripts("threshold_sweep").main(["--smoke", f"--workdir={workdir}"])
    rows = _rows(workdir / "threshold_sweep.csv")
    control = [r for r in rows if r["method"] == "control"]
    want = results["methods"]["control"]["threshold_sweep"]["overall_mean"]
    np.testing.assert_allclose([float(r["overall_mean"]) for r in control], want, rtol=1e-9)
    assert scripts("threshold_sweep").crossing([0.1, 0.2, 0.3], [0.8, 0.6, 0.4],
                                               [0.2, 0.5, 0.9]) == pytest.approx(0.2 + 0.1 / 6)

    scripts("roc_curves").main(["--smoke", f"--workdir={workdir}"])
    rows = _rows(workdir / "roc_curves.csv")
    for method, entry in results["methods"].items():
        curve = [r for r in rows if r["method"] == method]
        area = np.trapezoid([float(r["tpr_mean"]) for r in curve], [float(r["fpr"]) for r in curve])
        assert area == pytest.approx(entry["weighted_auc"]["mean"], abs=5e-3)

    scripts("training_curves").main(["--smoke", f"--workdir={workdir}"])
    rows = _rows(workdir / "training_curves.csv")
    assert {r["method"] for r in rows} == set(results["methods"])
    epochs = sorted({int(r["epoch"]) for r in rows})
    assert epochs == sorted({json.loads(line)["epoch"] for line in
                             Workdir(workdir).metrics.read_text().splitlines()})


def test_softness_study_and_bad_arguments(tmp_path, scripts, capsys):
    scripts("softness").main(["--smoke", f"--workdir={tmp_path}"])
    out = capsys.readouterr().out
    for s in ("0.01", "0.05", "0.1", "0.2"):
        assert f"soft_e_stitchup/alpha=0.3/softness={s} " in out
    assert Workdir(tmp_path).figure("softness").exists()
    with pytest.raises(SystemExit):
        scripts("softness").main([f"--workdir={tmp_path}", "--epochs=3"])
    assert "overrides look like --config.a.b=value" in capsys.readouterr().err


def test_none_share_study(tmp_path, scripts, capsys):
    fast = ["--config.num_epochs=4", "--config.eval_every=4", "--config.checkpoint_every=4",
            "--config.chunk_epochs=4",
            "--config.sweep.alphas=(0.2,)"]
    scripts("none_share").main(["--smoke", f"--workdir={tmp_path}", "--holdout=2,0", *fast])
    rows = _rows(tmp_path / "none_share.csv")
    assert [(r["holdout"], r["method"]) for r in rows][::5] == [("0", "control"), ("2", "control")]
    for k in (0, 2):
        run = Workdir(tmp_path / f"holdout_{k}")
        results = json.loads(run.results_json.read_text())
        config = json.loads(run.config.read_text())
        assert str(config["data"]["holdout_classes"]) == str(k)  # a count or class names
        for r in (r for r in rows if r["holdout"] == str(k)):
            # One procedure throughout: the held-out one, whose rows the paired gains use.
            assert r["procedure"] == "held-out"
            entry = results["selection"]["methods"][r["method"]]
            assert float(r["none_share"]) == pytest.approx(entry["none_weight"]["mean"])
            assert float(r["weighted_auc_mean"]) == pytest.approx(entry["weighted_auc"]["mean"])
            oscr = entry["oscr_auc"]["mean"]  # None without "none" rows: an empty cell
            assert r["oscr_auc_mean"] == "" if oscr is None else (
                float(r["oscr_auc_mean"]) == pytest.approx(oscr))
            gain = results["paired"]["methods"].get(r["method"], {}).get("oscr_auc")
            if gain and gain["mean"] is not None:
                assert float(r["gain_oscr_auc"]) == pytest.approx(gain["mean"])
    shares = {r["holdout"]: float(r["none_share"]) for r in rows}
    assert shares["0"] == 0 and shares["2"] > 0
    assert (tmp_path / "none_share.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        scripts("none_share").main([f"--workdir={tmp_path}", "--holdout=two"])
