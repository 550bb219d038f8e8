"""Tests for embaug_jax.registry: the rows, their checks, and a new method and setting that run
end to end through the registry alone."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embaug_jax import augment, configlib, registry
from embaug_jax.registry import Method, Range, Setting
from embaug_jax.run import train as run_train
from embaug_jax.train import driver, program
from embaug_jax.workdir import Workdir
from embaug_jax.train.members import member_groups, sweep_members

default = configlib.load_module(Path(__file__).resolve().parent.parent / "configs" / "default.py")

# A user's own method: a control-kind transform that negates each embedding element with
# probability flip_rate, and its swept setting.
FLIP_RATE = Setting(name="flip_rate", grid="flip_rates", range=Range(low=0, high=1),
                    default=(0.1,), note="the share of elements negated")


def _flip_rows(key, x, y, params, *, class_mask=None):
    flip = jax.random.uniform(jax.random.fold_in(key, 7), x.shape) < params.flip_rate
    return jnp.where(flip, -x, x), y


SIGN_FLIP = Method(name="sign_flip", display="Sign flip", kind="control", reads=("flip_rate",),
                   transform=_flip_rows, reference="a test's own")


def _tiny(**overrides):
    """configs/default.py:smoke, shorter: one chunk of 4 epochs, one trial."""
    c = default.get_config("smoke")
    c.model.hidden = (16,)
    c.num_epochs, c.eval_every, c.chunk_epochs, c.checkpoint_every = 4, 4, 4, 4
    c.data.trials = 1
    c.update_from_flattened_dict(overrides)
    return c


def test_the_built_in_rows():
    assert registry.method_names(tag="paper") == augment.METHOD_NAMES == (
        "control", "e_mixup", "e_stitchup", "soft_e_mixup", "soft_e_stitchup")
    assert registry.method_names(tag="baseline") == (
        "soft_control", "label_smoothing", "gaussian_noise", "feature_dropout", "manifold_mixup")
    own = ["alpha", "softness", "smoothing", "noise_std", "drop_rate"]
    every = ["lr_min", "lr_max", "half_cycle_epochs", "weight_decay", "dropout"]
    assert [s.name for s in registry.settings()] == own + every
    assert [s.grid for s in registry.settings()] == ["alphas"] + own[1:] + every
    assert [s.name for s in registry.settings(every_method=False)] == own
    assert [s.name for s in registry.settings(every_method=True)] == every
    assert [s.config_key for s in registry.settings(every_method=True)] == [
        "optim.lr_min", "optim.lr_max", "optim.half_cycle_epochs", "optim.weight_decay",
        "model.dropout"]
    assert all(s.traced and s.default == () for s in registry.settings(every_method=True))
    assert not any(set(every) & set(m.reads) for m in registry.methods())
    assert "weight_decay" not in augment.method_params("control")._fields
    with pytest.raises(ValueError, match="weight_decay is read by every method"):
        augment.method_params("control", weight_decay=1e-3)
    assert [s.name for s in registry.settings() if s.column] == ["alpha", "softness"]
    assert registry.method_names(kind="control") == (
        "control", "soft_control", "label_smoothing", "gaussian_noise", "feature_dropout")
    e_mixup = registry.method("e_mixup")
    assert (e_mixup.display, e_mixup.kind, e_mixup.reads, e_mixup.function) == (
        "E-Mixup", "mixup", ("alpha",), augment.e_mixup)
    assert registry.method("soft_e_stitchup").soft and registry.method("soft_control").soft
    assert registry.setting("alpha").text == (
        "> 0 (the Beta(alpha, alpha) parameter; the paper searched (0, 0.5])")
    for row in registry.methods():
        assert row.function is not None and row.reference, row.name
        assert row.function is getattr(augment, row.name)


def test_lookups_name_close_matches():
    with pytest.raises(registry.UnknownNameError, match="unknown method 'e_mixpu'; use one of "
                       "'control', .*; did you mean 'e_mixup'"):
        registry.method("e_mixpu")
    with pytest.raises(KeyError, match="unknown setting 'alphas'.*did you mean 'alpha'"):
        registry.setting("alphas")
    assert registry.display_name("soft_e_mixup") == "Soft E-Mixup"
    assert registry.display_name("not_registered") == "not_registered"
    assert registry.method_index("control") == 0


def test_ranges_print_as_messages_say_them():
    assert str(Range(low=0, low_closed=False)) == "> 0" and 0 not in Range(low=0, low_closed=False)
    assert str(Range(low=0, high=1, high_closed=False)) == "in [0, 1)"
    assert str(Range(high=2)) == "<= 2" and str(Range(low=-1)) == ">= -1"
    assert 0.5 in Range(low=0, high=1) and 1 in Range(low=0, high=1)
    assert math.nan not in Range() and math.inf not in Range()


@pytest.mark.parametrize("row, error, words", [
    (Method(name="x", display="X", kind="mix"), ValueError, "unknown kind 'mix'.*'mixup'"),
    (Method(name="x", display="X", kind="control", reads=("alpah",)), ValueError,
     "unknown setting .*'alpah'.*did you mean 'alpha'"),
    (Method(name="x", display="X", kind="mixup"), ValueError, "must read 'alpha'"),
    (Method(name="x", display="X", kind="control", soft=True), ValueError, "must read 'softness'"),
    (Method(name="x", display="X", kind="manifold", reads=("alpha",), transform=_flip_rows),
     ValueError, "manifold"),
    (Method(name="x/y", display="X", kind="control"), ValueError, "identifier"),
    (Method(name="x", display="", kind="control"), ValueError, "display"),
    (Method(name="x", display="X", kind="control", transform="noise"), TypeError, "callable"),
    (Method(name="e_mixup", display="Mine", kind="mixup", reads=("alpha",)), ValueError,
     "already registered.*replace=True"),
    (Setting(name="trial", grid="trials", range=Range(), default=(0,)), ValueError, "identifier"),
    (Setting(name="depth", grid="seeds", range=Range(), default=(0,)), ValueError, "config.sweep"),
    (Setting(name="depth", grid="alphas", range=Range(), default=(1,)), ValueError,
     "grid 'alphas' is already setting 'alpha'"),
    (Setting(name="depth", grid="depths", range=Range(low=1), default=(0,)), ValueError,
     "default"),
    (Setting(name="depth", grid="depths", range=Range(low=1), default=()), ValueError,
     "default"),
    (Setting(name="depth", grid="depths", range=Range(low=1), default=(2,),
             config_key="model.depth"), ValueError, "default grid must be empty"),
    (Setting(name="depth", grid="depths", range=Range(low=1), default=(),
             config_key="depth"), ValueError, "dotted config field"),
    (Method(name="x", display="X", kind="control", reads=("weight_decay",)), ValueError,
     "'weight_decay' is read by every method"),
])
def test_bad_rows_are_refused_with_a_clear_error(row, error, words):
    with pytest.raises(error, match=words):
        registry.register(row)
    assert registry.method_names() == registry.method_names(tag="paper") + (
        registry.method_names(tag="baseline"))  # nothing was registered


def test_temporary_registration_is_restored():
    before = registry.methods(), registry.settings()
    with registry.temporary(SIGN_FLIP, FLIP_RATE):  # settings first, whatever the order
        assert registry.methods()[-1] is SIGN_FLIP and registry.settings()[-1] is FLIP_RATE
        assert registry.method_index("sign_flip") == len(before[0])
        registry.register(Setting(name="other", grid="others", range=Range(), default=(1,)))
        with pytest.raises(ValueError, match="already registered"):
            registry.register(Method(name="sign_flip", display="Flip", kind="control"))
        registry.register(SIGN_FLIP)  # the same row again: nothing happens
    assert (registry.methods(), registry.settings()) == before

    with registry.temporary():  # restores what the decorator registers
        @registry.register_method(display="Shuffle", kind="control", tags=("mine",))
        def shuffled(key, x, y):
            return x, y

        row = registry.method("shuffled")
        assert row.function is shuffled and row.tags == frozenset({"mine"})
        assert registry.method_names(tag="mine") == ("shuffled",)
    assert registry.methods() == before[0]


def test_a_registered_transform_is_the_traced_forms_and_a_new_program():
    """The traced form applies a registered transform to its own method's members only, and a
    spec built after the registration differs, so no compiled program is reused stale."""
    c = _tiny()
    before = {k: program.ProgramSpec.from_config(c, 10, 160, kind=k) for k in ("control", "mixup")}
    x = jax.random.normal(jax.random.key(0), (8, 6))
    y = jax.nn.one_hot(jnp.arange(8) % 3, 3)
    key = jax.random.key(1)
    with registry.temporary(FLIP_RATE, SIGN_FLIP):
        params = augment.method_params("sign_flip")
        assert float(params.flip_rate) == pytest.approx(0.1)  # the default grid's first value
        flipped = augment.method_params("sign_flip", flip_rate=0.5)
        x_out, y_out, w = augment.augment_batch(key, x, y, flipped)
        want = _flip_rows(jax.random.split(key, 3)[2], x, y, flipped)
        np.testing.assert_array_equal(x_out, want[0])
        assert (np.asarray(x_out) != np.asarray(x)).any()
        np.testing.assert_array_equal(y_out, y)
        # Members of other methods never see it, in one vmapped program with it.
        members = [augment.method_params(m) for m in ("control", "gaussian_noise")] + [flipped]
        stacked = jax.tree.map(lambda *v: jnp.stack(v), *members)
        out = jax.vmap(lambda p: augment.augment_batch(key, x, y, p))(stacked)
        np.testing.assert_array_equal(out[0][0], x)
        np.testing.assert_array_equal(out[0][2], x_out)
        assert augment.method_params("control").flip_rate == 0
        with pytest.raises(ValueError, match=r"flip_rate=1.5 must be in \[0, 1\]"):
            augment.method_params("sign_flip", flip_rate=1.5)
        with pytest.raises(ValueError, match="did you mean 'flip_rate'"):
            augment.method_params("sign_flip", flip_rat=0.2)
        after = {k: program.ProgramSpec.from_config(c, 10, 160, kind=k)
                 for k in ("control", "mixup")}
        assert after["control"] != before["control"] and after["mixup"] == before["mixup"]
        assert after["control"].transforms[-1] == (registry.method_index("sign_flip"),
                                                   _flip_rows)


def test_a_registered_method_and_setting_train_and_report(tmp_path, fast_compile):
    """A method and a setting registered through the registry alone, no other code edited:
    configs/default.py:smoke grows the setting's grid, the sweep trains the method's members in
    the control's program, and results.json and results.md carry them."""
    with registry.temporary(FLIP_RATE, SIGN_FLIP):
        c = default.get_config("smoke")
        assert c.sweep.flip_rates == (0.1,)
        c.sweep.methods = ("control", "sign_flip")
        c.sweep.flip_rates = (0.1, 0.3)
        members = sweep_members(c)
        assert [g.name for g in member_groups(members)] == ["control"]  # one program
        run_train.train_and_evaluate(c, tmp_path)
        with pytest.raises(ValueError, match=r"flip_rate=2.0 in config.sweep.flip_rates must "
                           r"be in \[0, 1\] \(the share of elements negated\)"):
            run_train.validate_config(_tiny(**{"sweep.methods": ("sign_flip",),
                                             "sweep.flip_rates": (2.0,)}))
    w = Workdir(tmp_path)
    results = json.loads(w.results_json.read_text())
    assert list(results["variants"]) == ["control/alpha=0/softness=0",
                                         "sign_flip/alpha=0/softness=0/flip_rate=0.1",
                                         "sign_flip/alpha=0/softness=0/flip_rate=0.3"]
    flips = [results["variants"][f"sign_flip/alpha=0/softness=0/flip_rate={r}"]
             for r in (0.1, 0.3)]
    assert [v["flip_rate"] for v in flips] == [0.1, 0.3]
    control = results["variants"]["control/alpha=0/softness=0"]
    losses = {v["final_train_loss"]["mean"] for v in (control, *flips)}
    assert len(losses) == 3  # the transform changed what each member trained on
    assert results["methods"]["sign_flip"]["flip_rate"] in (0.1, 0.3)
    assert "sign_flip" in results["paired"]["methods"]
    md = w.results_md.read_text()
    assert "| Sign flip | - | - | flip_rate 0.1 |" in md and "flip_rate 0.3" in md
    assert "Sign flip against the control" in md
    metrics = [json.loads(line) for line in w.metrics.read_text().splitlines()]
    assert {m["flip_rate"] for m in metrics if m["method"] == "sign_flip"} == {0.1, 0.3}


def test_an_untraced_setting_splits_the_program(tmp_path, fast_compile):
    """An untraced setting reaches the transform as a Python number, and each of its values
    trains in a program of its own (checkpointed under the group's name); the other members'
    numbers do not move."""
    shift = Setting(name="shift", grid="shifts", range=Range(low=0), default=(1.0,),
                    traced=False)
    seen = []

    def shift_rows(key, x, y, params, *, class_mask=None):
        seen.append(params.shift)  # a number at trace time, not an array
        return x + params.shift, y

    shifted = Method(name="shifted", display="Shifted", kind="control", reads=("shift",),
                     transform=shift_rows)
    c = _tiny()
    data = run_train.prepare_data(c)[2]
    control = dict(method="control", trial=0, seed=0)
    with registry.temporary(shift, shifted):
        members = [control, dict(control, method="shifted", shift=1.0),
                   dict(control, method="shifted", shift=2.0)]
        groups = member_groups(members)
        assert [(g.name, g.static) for g in groups] == [
            ("control", ()), ("control(shift=1)", (("shift", 1.0),)),
            ("control(shift=2)", (("shift", 2.0),))]
        assert augment.method_params("shifted", shift=2.0).shift == 2.0
        r = driver.run_sweep(c, data, members, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert sorted(set(seen)) == [1.0, 2.0] and all(isinstance(v, float) for v in seen)
    loss = r.history["train_loss"]
    assert np.isfinite(loss).all() and len({float(v) for v in loss[:, -1]}) == 3
    alone = driver.run_sweep(c, data, members[:1], progress=False)
    np.testing.assert_allclose(alone.history["train_loss"][0], loss[0], rtol=1e-6)
    assert (tmp_path / "ckpt" / "4").is_dir()
