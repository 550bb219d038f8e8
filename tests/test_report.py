"""embaug_jax.report on small synthetic sweeps: every file, sane numbers, best-alpha choice."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from embaug_jax import configlib, evaluate, report
from embaug_jax.train.result import SweepResult
from embaug_jax.workdir import FIGURES, Workdir

C = 6
TRIALS = 3
NV = 90
# e_mixup's noise per alpha: alpha 0.2 is made the clear winner.
MIXUP_NOISE = {0.1: 0.8, 0.2: 0.6, 0.4: 1.0}
# The statistics' settings of a real run: configs/default.py's report section.
REPORT = dict(configlib.get_config(Path(__file__).resolve().parent.parent / "configs"
                                   / "default.py").report)


def _labels_and_seen(rng, trials=TRIALS, all_seen_trials=()):
    labels = rng.integers(0, C, (trials, NV))
    seen = np.ones((trials, C), bool)
    seen[:, C - 1] = False  # class 5 never in training: its examples are "none"
    for t in all_seen_trials:
        seen[t] = True
    return labels, seen


def _member_probs(rng, labels, seen, noise):
    """Perfect at noise 0 (unseen-class rows all zero); classes overlap more as noise grows."""
    onehot = np.eye(C)[labels] * seen
    signal = max(0.5, 1.0 - noise)
    return np.clip(onehot * signal + noise * rng.random((len(labels), C)), 0, 1)


def _sweep(rng, plan, *, epochs=4, all_seen_trials=()):
    labels, seen = _labels_and_seen(rng, all_seen_trials=all_seen_trials)
    members, probs = [], []
    for method, alpha, softness, noise in plan:
        for trial in range(TRIALS):
            members.append(dict(method=method, alpha=alpha, softness=softness, trial=trial, seed=7))
            probs.append(_member_probs(rng, labels[trial], seen[trial], noise))
    m = len(members)
    history = {k: rng.random((m, epochs)) for k in ("overall_accuracy", "none_accuracy",
                                                    "train_loss")}
    return SweepResult(members=members, eval_epochs=np.arange(1, epochs + 1) * 3,
                       history=history, val_probs=np.stack(probs).astype(np.float32),
                       val_labels=labels, seen_mask=seen,
                       class_names=[f"class_{k}" for k in range(C)], threshold=0.6)


def _strict_json(path):
    def no_nan(token):
        raise AssertionError(f"results.json holds {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=no_nan)


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 300 and im.size[1] > 200


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    rng = np.random.default_rng(0)
    plan = [("control", 0.0, 0.0, 0.0)]
    plan += [("e_mixup", a, 0.0, noise) for a, noise in MIXUP_NOISE.items()]
    plan += [("soft_e_stitchup", 0.3, s, 0.5) for s in (0.05, 0.1)]
    plan += [("e_stitchup", 0.3, 0.0, 0.5)]
    outputs = _sweep(rng, plan)
    workdir = tmp_path_factory.mktemp("report")
    results = report.write_report(workdir, outputs, title="synthetic sweep", **REPORT)
    return workdir, outputs, results


def test_writes_every_file_atomically(full_report):
    workdir, _, results = full_report
    w = Workdir(workdir)
    expected = {w.results_json, w.results_md, w.predictions, *map(w.figure, FIGURES)}
    assert set(workdir.iterdir()) == expected  # no temporaries left behind
    for name in FIGURES:
        _assert_png(w.figure(name))
    assert results["figures"] == list(FIGURES.values())
    assert _strict_json(w.results_json) == json.loads(json.dumps(results))


def test_perfect_classifier_scores_one(full_report):
    _, _, results = full_report
    control = results["methods"]["control"]
    for key in ("weighted_auc", "overall_accuracy", "none_accuracy", "seen_accuracy",
                "none_auroc", "none_aupr"):
        assert control[key]["mean"] == 1.0 and control[key]["max_dev"] == 0.0, key
    assert control["none_fpr_at_95_tpr"]["mean"] == 0.0
    assert control["weighted_auc"]["n"] == TRIALS


def test_best_alpha_and_statistics(full_report):
    _, outputs, results = full_report
    assert list(results["methods"]) == ["control", "e_mixup", "e_stitchup", "soft_e_stitchup"]
    e_mixup = results["methods"]["e_mixup"]
    assert e_mixup["alpha"] == 0.2 and e_mixup["variant"] == "e_mixup/alpha=0.2/softness=0"
    assert [v["alpha"] for v in results["variants"].values() if v["method"] == "e_mixup"] == \
        [0.1, 0.2, 0.4]
    # The per-trial values are each member's own weighted AUC; mean / std / max_dev over them.
    idx = [i for i, m in enumerate(outputs.members)
           if m["method"] == "e_mixup" and m["alpha"] == 0.2]
    aucs = []  # sklearn's, the oracle
    for i in idx:
        t = outputs.members[i]["trial"]
        truth, scores, _, _ = evaluate.ovr_scores(outputs.val_probs[i], outputs.val_labels[t],
                                                 outputs.seen_mask[t])
        aucs.append(roc_auc_score(truth, scores, average="weighted"))
    aucs = np.array(aucs)
    stat = e_mixup["weighted_auc"]
    np.testing.assert_allclose(stat["values"], aucs, rtol=1e-6)
    np.testing.assert_allclose(stat["mean"], aucs.mean(), rtol=1e-6)
    np.testing.assert_allclose(stat["std"], aucs.std(), rtol=1e-5)
    np.testing.assert_allclose(stat["max_dev"], np.abs(aucs - aucs.mean()).max(), rtol=1e-5)
    assert 0.5 < stat["mean"] < 1.0
    assert results["threshold"] == 0.6 and len(results["variants"]) == 7
    soft = results["methods"]["soft_e_stitchup"]
    assert soft["softness"] in (0.05, 0.1) and soft["threshold_sweep"]["thresholds"][0] == 0.05


def test_results_markdown(full_report):
    workdir, _, results = full_report
    md = Workdir(workdir).results_md.read_text()
    assert md.startswith("# synthetic sweep")
    # The Table-1 rows, rebuilt from results.json's numbers: one per method, in the paper's order.
    names = {"control": "Control", "e_mixup": "E-Mixup", "e_stitchup": "E-Stitchup",
             "soft_e_stitchup": "Soft E-Stitchup"}
    table = md[md.index("| Method |"):].split("\n\n")[0].splitlines()[2:]
    assert [row.split(" | ")[0][2:] for row in table] == list(names.values())
    for row, (method, e) in zip(table, results["methods"].items()):
        auc, alpha = e["weighted_auc"], e["alpha"]
        alpha = "-" if method == "control" else f"{alpha:g}"
        assert row.startswith(f"| {names[method]} | {alpha} |")
        assert f" {auc['mean']:.4f} ± {auc['max_dev']:.4f} |" in row
    assert ("| Control | - | - | 1.0000 ± 0.0000 | 100.00 ± 0.00 | 100.00 ± 0.00 "
            "| 0.9582 ± 0.0015 |") in md
    assert "| E-Mixup | 0.2 | - |" in report.format_table(results)
    # The alpha grid lists every variant.
    grid = md[md.index("## Every variant"):md.index("## Figures")]
    assert grid.count("| E-Mixup |") == 3
    for heading in ("## The weighted AUC by part", "## Alpha chosen on held-out rows",
                    "## Differences from the control", "## Per-class AUC"):
        assert heading in md
    assert "Paper's weighted AUC (its own data: Fashion Product Images)" in md
    assert "are absent" not in md  # every trial here has "none" examples
    for name in FIGURES.values():
        assert f"({name})" in md


def test_no_none_examples_and_no_history(tmp_path):
    """A trial with every class seen has NaN "none" accuracy: left out of the mean, null in
    JSON; with no evaluation epochs and no softness sweep, Figures 5 and 6 are skipped."""
    rng = np.random.default_rng(1)
    outputs = _sweep(rng, [("control", 0.0, 0.0, 0.3), ("e_mixup", 0.2, 0.0, 0.3)], epochs=0,
                     all_seen_trials=(1,))
    results = report.write_report(tmp_path, outputs, threshold=0.5, thresholds=[0.2, 0.5, 0.8],
                                  **REPORT)
    none_acc = results["methods"]["e_mixup"]["none_accuracy"]
    assert none_acc["n"] == TRIALS - 1 and none_acc["values"][1] is None
    assert results["num_none_examples"][1] == 0
    assert results["methods"]["control"]["threshold_sweep"]["thresholds"] == [0.2, 0.5, 0.8]
    assert results["figures"] == [FIGURES[k] for k in ("threshold_sweep", "roc", "reliability",
                                                       "auc_decomposition", "oscr")]
    assert not Workdir(tmp_path).figure("training_curves").exists()
    assert _strict_json(Workdir(tmp_path).results_json)["threshold"] == 0.5


def test_bad_sweep_results_raise_clear_errors():
    rng = np.random.default_rng(2)
    good = _sweep(rng, [("control", 0.0, 0.0, 0.3)])
    fields = dict(members=good.members, eval_epochs=good.eval_epochs, history=good.history,
                  val_probs=good.val_probs, val_labels=good.val_labels,
                  seen_mask=good.seen_mask, class_names=good.class_names)

    def build(**changes):
        return SweepResult(**{**fields, **changes})

    with pytest.raises(ValueError, match="2 members but val_probs holds 3"):
        build(members=good.members[:2])
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        build(members=[{**m, "trial": 3} for m in good.members])
    with pytest.raises(ValueError, match=r"lacks \['seed'\]"):
        build(members=[{k: v for k, v in m.items() if k != "seed"} for m in good.members])
    probs = good.val_probs.copy()
    probs[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf for members \[1\]"):
        build(val_probs=probs)
    with pytest.raises(ValueError, match=r"history\['train_loss'\] must be \[M, E\]"):
        build(history={**good.history, "train_loss": good.history["train_loss"][:, :2]})
    with pytest.raises(ValueError, match=r"seen_mask must be \[T, C\]"):
        build(seen_mask=good.seen_mask[:, :-1])
    with pytest.raises(ValueError, match="class_names"):
        build(class_names=good.class_names[:-1])
    with pytest.raises(ValueError, match=r"threshold=1.5 must lie in \(0, 1\)"):
        report.write_report("/nonexistent/never-written", good, threshold=1.5, **REPORT)
    with pytest.raises(ValueError, match=r"selection_fraction=1.0 must lie in \[0, 1\)"):
        report.write_report("/nonexistent/never-written", good,
                            **{**REPORT, "selection_fraction": 1.0})
    with pytest.raises(ValueError, match="bootstrap_resamples=-1 must be a whole number >= 0"):
        report.write_report("/nonexistent/never-written", good,
                            **{**REPORT, "bootstrap_resamples": -1})
    with pytest.raises(ValueError, match="records no threshold"):
        report.write_report("/nonexistent/never-written", build(threshold=None), **REPORT)


def test_results_carry_the_curves_the_studies_redraw(full_report):
    _, _, results = full_report
    control = results["methods"]["control"]
    roc = control["roc"]
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0
    assert roc["tpr_mean"][1] == 1.0  # perfect: full recall at the first positive FPR
    mixup = results["methods"]["e_mixup"]
    tpr = np.asarray(mixup["roc"]["tpr_mean"])
    assert np.all(np.diff(tpr) >= -1e-12) and tpr[-1] == 1.0
    # The trapezoid area of the stored mean curve is the variant's mean weighted AUC, to the
    # resolution of the FPR grid.
    area = np.trapezoid(tpr, mixup["roc"]["fpr"])
    np.testing.assert_allclose(area, mixup["weighted_auc"]["mean"], atol=5e-3)
    sweep = mixup["threshold_sweep"]
    for kind in ("overall", "none"):
        lo, mean, hi = (np.asarray(sweep[f"{kind}_{s}"], float) for s in ("min", "mean", "max"))
        assert np.all(lo <= mean + 1e-12) and np.all(mean <= hi + 1e-12)


def test_swept_settings_every_method_reads_name_variants_and_get_axes(tmp_path):
    """A weight decay x dropout grid over the control and E-Mixup: the swept settings name the
    variants (the unswept learning rate does not), each method's setting is chosen over the
    grid, and results["axes"], results.md and settings.png show each metric along each."""
    rng = np.random.default_rng(3)
    labels, seen = _labels_and_seen(rng)
    fixed = dict(lr_min=3e-4, lr_max=3e-3, half_cycle_epochs=12.0)
    # The control learns best at weight decay 1e-3 and dropout 0.3, E-Mixup at 1e-5 and 0.1.
    noise = {("control", 1e-5): 1.4, ("control", 1e-3): 1.0, ("e_mixup", 1e-5): 0.9,
             ("e_mixup", 1e-3): 1.3}
    members, probs = [], []
    for method, alpha in (("control", 0.0), ("e_mixup", 0.2)):
        for wd in (1e-5, 1e-3):
            for dropout in (0.1, 0.3):
                for trial in range(TRIALS):
                    members.append(dict(method=method, alpha=alpha, softness=0.0, **fixed,
                                        weight_decay=wd, dropout=dropout, trial=trial, seed=0))
                    bonus = 0.3 if (dropout == 0.3) == (method == "control") else 0.0
                    probs.append(_member_probs(rng, labels[trial], seen[trial],
                                               noise[method, wd] - bonus))
    outputs = SweepResult(members=members, eval_epochs=np.array([4]),
                          history={k: rng.random((len(members), 1)) for k in (
                              "overall_accuracy", "none_accuracy", "train_loss")},
                          val_probs=np.stack(probs).astype(np.float32), val_labels=labels,
                          seen_mask=seen, class_names=[f"class_{k}" for k in range(C)],
                          threshold=0.6)
    results = report.write_report(tmp_path, outputs, **REPORT)
    assert list(results["variants"])[:2] == [
        "control/alpha=0/softness=0/weight_decay=1e-05/dropout=0.1",
        "control/alpha=0/softness=0/weight_decay=1e-05/dropout=0.3"]
    for method, wd, dropout in (("control", 1e-3, 0.3), ("e_mixup", 1e-5, 0.1)):
        for section in (results["methods"], results["selection"]["methods"]):
            assert (section[method]["weight_decay"], section[method]["dropout"]) == (wd, dropout)
    axes = results["axes"]
    assert axes["choice"] == "held-out" and axes["metrics"] == list(REPORT["axis_metrics"])
    assert list(axes["settings"]) == ["weight_decay", "dropout"]
    line = axes["settings"]["weight_decay"]
    assert line["values"] == [1e-5, 1e-3]
    control = line["methods"]["control"]
    assert control["chosen"] == 1e-3 and control["fixed"] == dict(alpha=0, softness=0,
                                                                   dropout=0.3)
    assert control["variants"] == ["control/alpha=0/softness=0/weight_decay=1e-05/dropout=0.3",
                                   "control/alpha=0/softness=0/weight_decay=0.001/dropout=0.3"]
    for name, stat in zip(control["variants"], control["weighted_auc"]):
        assert stat == results["variants"][name]["weighted_auc"]
    assert control["weighted_auc"][1]["mean"] > control["weighted_auc"][0]["mean"]
    w = Workdir(tmp_path)
    _assert_png(w.figure("settings"))
    assert results["figures"][-1] == FIGURES["settings"]
    md = w.results_md.read_text()
    assert "| Method | alpha | softness | weight_decay | dropout | Weighted AUC |" in md
    along = md[md.index("## Along each swept setting"):md.index("## Every variant")]
    assert "Weighted AUC against weight_decay:" in along
    assert "\"none\" accuracy (%) against dropout:" in along
    auc = results["variants"]["control/alpha=0/softness=0/weight_decay=0.001/dropout=0.3"][
        "weighted_auc"]
    assert (f"| Control | dropout 0.3 | {auc['mean'] - 0:.4f}" not in along
            and f"**{auc['mean']:.4f} ± {auc['max_dev']:.4f}**" in along)
