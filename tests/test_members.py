"""Tests for embaug_jax.train.members: the sweep's grid, its traced members and their groups."""

from pathlib import Path

import numpy as np

from embaug_jax import augment, configlib, registry
from embaug_jax.train.members import member_groups, member_hparams, sweep_members

default = configlib.load_module(Path(__file__).resolve().parent.parent / "configs" / "default.py")


def test_sweep_members_grid():
    c = default.get_config("smoke")
    c.sweep.methods = registry.method_names(tag="paper")
    c.sweep.alphas = (0.1, 0.3)
    c.sweep.softness = (0.05, 0.1)
    c.sweep.seeds = (0, 1)
    members = sweep_members(c)
    # control once per trial x seed; 2 non-soft x 2 alphas; 2 soft x 2 alphas x 2 softness.
    assert len(members) == (1 + 2 * 2 + 2 * 2 * 2) * 2 * 2
    assert {(m["alpha"], m["softness"]) for m in members if m["method"] == "control"} == {(0, 0)}
    hp = member_hparams(members)
    assert hp.method.mix.shape == (len(members),)


def test_every_member_records_every_setting_and_reads_its_own():
    c = default.get_config("smoke")
    c.sweep.methods = ("label_smoothing", "soft_e_mixup")
    c.sweep.smoothing, c.sweep.alphas = (0.05, 0.1), (0.2, 0.4)
    members = sweep_members(c)
    names = [s.name for s in registry.settings()]
    assert all(list(m)[1:-2] == names for m in members)  # method, settings, trial, seed
    smoothing = [m for m in members if m["method"] == "label_smoothing"]
    assert [m["smoothing"] for m in smoothing] == [0.05, 0.05, 0.1, 0.1]  # x 2 trials
    assert all(m["alpha"] == 0 and m["softness"] == 0 for m in smoothing)
    hp = member_hparams(members)
    # The traced values: a method's own settings, 0 for the others; its kind, soft switch, id.
    np.testing.assert_allclose(hp.method.smoothing, [0.05, 0.05, 0.1, 0.1] + [0] * 4)
    np.testing.assert_allclose(hp.method.alpha, [0] * 4 + [0.2, 0.2, 0.4, 0.4])
    np.testing.assert_allclose(hp.method.softness, [0] * 4 + [0.05] * 4, rtol=1e-7)
    np.testing.assert_array_equal(hp.method.mix, [augment.MIX_CONTROL] * 4
                                  + [augment.MIX_MIXUP] * 4)
    np.testing.assert_array_equal(hp.method.soft, [False] * 4 + [True] * 4)
    np.testing.assert_array_equal(hp.method.method, [registry.method_index("label_smoothing")] * 4
                                  + [registry.method_index("soft_e_mixup")] * 4)


def test_groups_are_the_kinds_in_order_of_first_appearance():
    members = [dict(method=m, alpha=0.2, softness=0.05, trial=0, seed=0)
               for m in ("e_stitchup", "control", "soft_e_mixup", "soft_control", "e_mixup",
                         "manifold_mixup")]
    groups = member_groups(members)
    assert [(g.name, g.kind, g.static, list(g.members)) for g in groups] == [
        ("stitchup", "stitchup", (), [0]), ("control", "control", (), [1, 3]),
        ("mixup", "mixup", (), [2, 4]), ("manifold", "manifold", (), [5])]
