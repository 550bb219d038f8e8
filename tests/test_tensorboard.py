"""embaug_jax.report.tensorboard: the event files of a training run, read back with TensorBoard's
own reader: a run per variant, its curves, its hparams, and no event twice across a resume."""

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator, event_multiplexer
from tensorboard.plugins.hparams import plugin_data_pb2

from embaug_jax import configlib
from embaug_jax.run import train as run_train
from embaug_jax.train import optim
from embaug_jax.workdir import Workdir

default = configlib.load_module(Path(__file__).resolve().parent.parent / "configs" / "default.py")


def _config():
    """Two variants of E-Mixup and the control, 16 epochs in chunks of 4, a checkpoint every 8."""
    c = default.get_config("smoke")
    c.data.trials = 2
    c.model.hidden = (16,)
    c.sweep.methods = ("control", "e_mixup")
    c.sweep.alphas = (0.2, 0.4)
    c.num_epochs, c.eval_every, c.chunk_epochs, c.checkpoint_every = 16, 4, 4, 8
    return c


def _events(root: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run: {tag: [(step, value), ...]}} of every scalar under `root`, as TensorBoard reads it
    (every event kept, none purged)."""
    mux = event_multiplexer.EventMultiplexer(
        size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=False)
    mux.AddRunsFromDirectory(str(root)).Reload()
    return {run: {tag: [(e.step, e.value) for e in mux.Scalars(run, tag)]
                  for tag in tags["scalars"]}
            for run, tags in mux.Runs().items()}


# Compiling dominates these small runs; every run the tests compare is compiled alike.
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def whole(tmp_path_factory, fast_compiling):
    workdir = tmp_path_factory.mktemp("whole")
    with fast_compiling():
        run_train.train_and_evaluate(_config(), workdir)
    return Workdir(workdir)


def test_a_run_per_variant_with_its_curves_and_hparams(whole):
    events = _events(whole.tensorboard)
    variants = ["control/alpha=0/softness=0", "e_mixup/alpha=0.2/softness=0",
                "e_mixup/alpha=0.4/softness=0"]
    assert sorted(events) == variants
    results = json.loads(whole.results_json.read_text())
    assert list(results["variants"]) == variants  # the report's names
    rows = [json.loads(line) for line in whole.metrics.read_text().splitlines()]
    for run, tags in events.items():
        assert set(tags) == {"train/loss", "train/learning_rate", "validation/overall_accuracy",
                             "validation/none_accuracy", "validation/seen_accuracy"}
        method, alpha = run.split("/")[0], float(run.split("/")[1].partition("=")[2])
        mine = [r for r in rows if r["method"] == method and r["alpha"] == alpha]
        assert {r["trial"] for r in mine} == {0, 1}
        for tag, key in (("train/loss", "train_loss"),
                         ("validation/overall_accuracy", "overall_accuracy"),
                         ("validation/none_accuracy", "none_accuracy")):
            assert [s for s, _ in tags[tag]] == [4, 8, 12, 16], tag
            for step, value in tags[tag]:  # the mean over the variant's trials
                want = np.mean([r[key] for r in mine if r["epoch"] == step])
                np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=tag)
        lrs = tags["train/learning_rate"]
        assert [s for s, _ in lrs] == list(range(17))  # after every epoch, and at the start
        steps_per_epoch = 160 // 16  # 640 rows x 0.25 training, batch 16
        want = optim.learning_rates(mine[0], np.arange(17), steps_per_epoch)
        np.testing.assert_allclose([v for _, v in lrs], want, rtol=1e-6)
        assert lrs[0][1] == pytest.approx(3e-4) and lrs[4][1] == pytest.approx(3e-3)
        # The variant's method and settings as hparams, for the HParams dashboard.
        acc = event_accumulator.EventAccumulator(str(whole.tensorboard / run))
        acc.Reload()
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert start.hparams["method"].string_value == method
        assert start.hparams["alpha"].number_value == pytest.approx(alpha)
        assert start.hparams["variant"].string_value == run


def test_a_resumed_run_writes_each_event_once(whole, tmp_path):
    """Killed after epoch 12, whose chunk no checkpoint holds (the last is at 8): the resumed
    run trains epochs 9-12 again but writes only 13-16, and its events are the uninterrupted
    run's, each once."""
    killed = Workdir(tmp_path / "killed")
    assert run_train.train_and_evaluate(_config(), killed,
                                        on_chunk=lambda history, done: done == 12) is None
    assert sorted(p.name for p in (killed.checkpoints).iterdir() if p.name.isdigit()) == ["8"]
    covered = sorted(p.name for p in (killed.tensorboard / "control/alpha=0/softness=0").iterdir())
    assert covered == [f"events.out.tfevents.{a:06d}-{b:06d}.embaug"
                       for a, b in ((0, 4), (5, 8), (9, 12))]
    run_train.train_and_evaluate(_config(), killed)
    resumed, uninterrupted = _events(killed.tensorboard), _events(whole.tensorboard)
    assert resumed.keys() == uninterrupted.keys()
    for run, tags in resumed.items():
        for tag, points in tags.items():
            steps = [s for s, _ in points]
            assert len(steps) == len(set(steps)), (run, tag, steps)  # no event twice
            np.testing.assert_allclose(points, uninterrupted[run][tag], rtol=1e-6,
                                       err_msg=f"{run} {tag}")
    # A rerun of the finished run writes nothing more.
    names = sorted(str(p) for p in killed.tensorboard.rglob("events.*"))
    run_train.train_and_evaluate(_config(), killed)
    assert sorted(str(p) for p in killed.tensorboard.rglob("events.*")) == names


def test_a_fresh_start_drops_an_earlier_runs_events_and_only_process_0_writes(
        whole, tmp_path, monkeypatch):
    w = Workdir(tmp_path / "w")
    stale = w.tensorboard / "control/alpha=0/softness=0"
    stale.mkdir(parents=True)
    (stale / "events.out.tfevents.000000-000016.embaug").write_bytes(b"")
    c = _config()
    c.sweep.methods = ("control",)
    run_train.train_and_evaluate(c, w)  # no checkpoint: it starts at epoch 0
    assert len(_events(w.tensorboard)["control/alpha=0/softness=0"]["train/loss"]) == 4
    monkeypatch.setattr(run_train.distributed, "is_primary", lambda: False)
    other = Workdir(tmp_path / "other")
    run_train.train_and_evaluate(c, other)
    assert not other.tensorboard.exists()
