"""Tests for the sweep engine (embaug_jax.train.program, driver, checkpoints): its invariances,
one program per kind, checkpoints and errors."""

import logging
import re
from pathlib import Path

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from embaug_jax import configlib, registry
from embaug_jax.evaluate import threshold_counts
from embaug_jax.run import train as run_train
from embaug_jax.train import driver, optim, program
from embaug_jax.train.members import (
    member_groups,
    member_hparams,
    sweep_members,
    with_config_settings,
)
from embaug_jax.train.synthetic import make_synthetic
from embaug_jax.util import UserError, on_cpus

default = configlib.load_module(Path(__file__).resolve().parent.parent / "configs" / "default.py")


def _config(**overrides):
    c = default.get_config("smoke")
    c.data.synthetic.update(dict(n=320, dim=12, num_classes=6, class_sep=2.0, segments=(4, 8)))
    c.model.hidden = (32,)
    c.batch_size = 8
    c.num_epochs, c.eval_every, c.chunk_epochs, c.checkpoint_every = 24, 8, 8, 8
    c.data.holdout_classes = "1"
    c.update_from_flattened_dict(overrides)
    return c


def _data(c):
    """The engine's input as `embaug train` builds it."""
    return run_train.prepare_data(c)[2]


def _spec(c, data, kind="control"):
    return program.ProgramSpec.from_config(c, data.seen_mask.shape[1], data.train_idx.shape[1],
                                         kind=kind)


def _group_spec(c, data, group):
    """The spec of a `Group`'s program, as `run_sweep` builds it (its shared settings fixed)."""
    return program.ProgramSpec.from_config(c, data.seen_mask.shape[1], data.train_idx.shape[1],
                                           kind=group.kind, fixed=group.fixed)


def _group_mesh(c, data, group, devices=None):
    """The ("members", "features") mesh `run_sweep` trains a `Group` on."""
    devices = jax.devices() if devices is None else devices
    return driver.group_mesh(devices, driver.devices_per_member(
        c, len(group.members), len(devices), data.x.shape[1], platform=devices[0].platform))


MEMBERS = [dict(method="control", alpha=0.0, softness=0.0, trial=0, seed=0),
           dict(method="e_mixup", alpha=0.3, softness=0.0, trial=1, seed=0),
           dict(method="soft_e_stitchup", alpha=0.2, softness=0.05, trial=0, seed=1)]


# MEMBERS and a second E-Mixup member: groups of 1, 2 and 1 members.
FOUR = MEMBERS + [dict(method="e_mixup", alpha=0.2, softness=0.0, trial=0, seed=1)]


@pytest.fixture(scope="module")
def sweep4(fast_compiling):
    """The three members above on all 4 (forced) CPU devices: padded to 4 members."""
    with fast_compiling():
        c = _config()
        data = _data(c)
        hp = member_hparams(with_config_settings(c, MEMBERS))
        return c, data, hp, driver.run_sweep(c, data, MEMBERS, progress=False)


def test_loss_falls_and_clusters_are_learnt(sweep4):
    c, data, hp, r = sweep4
    loss = r.history["train_loss"]
    # Soft targets have an entropy floor, so ask for a steady fall rather than a ratio.
    assert np.all(np.diff(loss, axis=1) < 0) and np.all(loss[:, 0] - loss[:, -1] > 0.05), loss
    assert np.all(np.diff(r.history["seen_accuracy"], axis=1) >= 0), r.history["seen_accuracy"]
    # Separable clusters: top-1 over the seen classes (no threshold) is far above chance.
    trials = np.asarray(hp.trial)
    labels = np.asarray(data.labels)[np.asarray(data.val_idx)[trials]]
    seen = np.asarray(data.seen_mask)[trials]
    top1 = np.where(seen[:, None], r.val_probs, -1).argmax(-1)
    truth_seen = np.take_along_axis(seen, labels, 1)
    acc = [(top1[i] == labels[i])[truth_seen[i]].mean() for i in range(3)]
    assert min(acc) > 0.8, acc
    assert r.val_probs.shape == (3, data.val_idx.shape[1], 6)
    np.testing.assert_array_equal(r.eval_epochs, [8, 16, 24])
    assert r.epochs_done == 24 and np.all(np.asarray(r.state.epoch) == 24)


def test_sweep_member_equals_lone_member(sweep4, fast_compile):
    c, data, hp, r = sweep4
    for i in (0, 2):
        kind = registry.method(MEMBERS[i]["method"]).kind
        lone = jax.jit(program.make_train(_spec(c, data, kind), c.num_epochs))
        one = jax.tree.map(lambda x: x[i], hp)
        state, metrics = lone(jax.random.key(c.seed), one, data)
        chex.assert_trees_all_close(state.params, jax.tree.map(lambda x: x[i], r.state.params),
                                    atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(metrics["train_loss"], r.history["train_loss"][i],
                                   rtol=1e-5)
        np.testing.assert_allclose(metrics["overall_accuracy"], r.history["overall_accuracy"][i])


@pytest.mark.devices(4)
def test_one_and_four_devices_agree(sweep4, fast_compile):
    c, data, hp, r4 = sweep4
    assert len(jax.devices()) == 4
    r1 = driver.run_sweep(c, data, MEMBERS, devices=jax.devices()[:1], progress=False)
    for k in r1.history:
        np.testing.assert_allclose(r1.history[k], r4.history[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r1.val_probs, r4.val_probs, atol=1e-5)


@pytest.mark.parametrize("members,devices,features,want", [
    (1, 1, 4864, 1), (1, 2, 4864, 2), (1, 4, 4864, 4), (2, 4, 4864, 2), (4, 4, 4864, 1),
    (2, 8, 4864, 4), (1, 32, 4864, 32),
    (3, 8, 4864, 2),  # three members on 4 x 2: a split over 4 would make a device train two
    (3, 4, 4864, 1), (5, 4, 4864, 1), (25, 2, 4864, 1),  # a split would add a round of members
    (1, 4, 6, 2), (1, 3, 64, 1), (1, 6, 9, 3),  # within the divisors of the features
])
def test_devices_per_member_adds_no_round_of_members(members, devices, features, want):
    for platform in ("gpu", "tpu"):
        assert driver.devices_per_member(_config(), members, devices, features,
                                         platform=platform) == want
    # On CPU devices, where a split member was slower, every member stays whole.
    assert driver.devices_per_member(_config(), members, devices, features,
                                     platform="cpu") == 1
    # The override wins wherever it divides the devices and the features.
    for platform in ("cpu", "gpu"):
        assert driver.devices_per_member(_config(devices_per_member=1), members, devices,
                                         features, platform=platform) == 1
        assert driver.devices_per_member(_config(devices_per_member=want), members, devices,
                                         features, platform=platform) == want


def test_devices_per_member_override_must_divide():
    assert driver.devices_per_member(_config(devices_per_member=2), 7, 4, 64, platform="gpu") == 2
    assert driver.devices_per_member(_config(devices_per_member=4), 1, 4, None,
                                     platform="cpu") == 4
    for value, devices, features, what in ((3, 4, 64, "4 device(s) and the embeddings' 64"),
                                           (0, 4, None, "4 device(s);"),
                                           (4, 4, 6, "4 device(s) and the embeddings' 6")):
        with pytest.raises(UserError, match=re.escape(
                f"config.devices_per_member={value} must be >= 1 and divide the {what}")):
            driver.devices_per_member(_config(devices_per_member=value), 1, devices, features,
                                      platform="cpu")


@pytest.fixture(scope="module")
def members_only(sweep4, fast_compiling):
    """FOUR on all 4 devices, each member on one device (the members-only layout)."""
    c, data, hp, r = sweep4
    with fast_compiling():
        return driver.run_sweep(_config(devices_per_member=1), data, FOUR, progress=False)


@pytest.mark.devices(4)
@pytest.mark.parametrize("n,per_member,layout", [
    (1, None, ["control: 1 member(s) on a 1 x 1", "mixup: 2 member(s) on a 1 x 1",
               "stitchup: 1 member(s) on a 1 x 1"]),
    (2, 2, ["control: 1 member(s) on a 1 x 2", "mixup: 2 member(s) on a 1 x 2",
            "stitchup: 1 member(s) on a 1 x 2"]),
    (4, 2, ["control: 1 member(s) on a 2 x 2", "mixup: 2 member(s) on a 2 x 2",
            "stitchup: 1 member(s) on a 2 x 2"]),
])
def test_members_split_over_idle_devices_equal_members_only(sweep4, members_only, n,
                                                             per_member, layout, caplog,
                                                             fast_compile):
    """Each member split over `per_member` devices by its embedding's features (a members x
    features mesh; a lone member padded to 2 x 2, two members taking turns on 1 x 2): every
    number is the members-only layout's (4 devices, each member on one) to float rounding."""
    c, data, hp, _ = sweep4
    with caplog.at_level(logging.INFO):
        r = driver.run_sweep(_config(devices_per_member=per_member), data, FOUR,
                             devices=jax.devices()[:n], progress=False)
    assert [m for m in layout if m in caplog.text] == layout, caplog.text
    for k in members_only.history:
        np.testing.assert_allclose(r.history[k], members_only.history[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.val_probs, members_only.val_probs, atol=1e-5)
    chex.assert_trees_all_close(r.state, members_only.state, atol=1e-5, rtol=1e-5)


@pytest.mark.devices(4)
def test_a_split_member_steps_with_one_all_reduce_and_identical_replicas(sweep4):
    c, data, hp, r = sweep4
    mesh = driver.group_mesh(jax.devices(), 4)  # one member, its 12 features over 4 devices
    init, run, evaluate = driver.compiled_group.__wrapped__(_spec(c, data, "mixup"), mesh, 1)
    placed, live = driver.place_members(jax.tree.map(lambda x: x[1:2], hp), mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    on_device = jax.device_put(driver.device_data(data), replicated)
    key = jax.random.key(0)
    start = init(key, placed, on_device)
    hlo = run.lower(key, placed, live, start, on_device, 2).compile().as_text()
    # One collective in the program: the step's all-reduce of the first layer's [4 rows, 32].
    collectives = re.findall(
        r"= (\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)\(", hlo)
    assert [shape.split("{")[0] for shape, _ in collectives] == ["f32[4,32]"], collectives
    state, loss = run(key, placed, live, start, on_device, 2)
    # The first layer's kernel and its moments are split by features (3 of 12 a device); every
    # other leaf took the same update everywhere: its replicas hold the same bits.
    split = jax.tree.leaves(program.make_program(_spec(c, data)).split_by_features(state))
    assert sum(split) == 3  # the kernel, Adam's mu and nu of it
    for leaf, by_features in zip(jax.tree.leaves(state), split):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == 4
        if by_features:
            assert leaf.shape[-1] == 12 and shards[0].shape[-1] == 3
        else:
            assert all(np.array_equal(s, shards[0]) for s in shards)
    block = next(driver.eval_blocks(data, 101))
    counts, probs = evaluate(state.params, placed, live, on_device, jax.device_put(block,
                                                                                   replicated))
    assert probs.shape == (1, 101, 6)
    built = program.make_program(_spec(c, data, "mixup"))
    params = jax.tree.map(lambda x: x[0], state.params)
    want_counts, want_probs = built.evaluate(params, jax.tree.map(lambda x: x[0], placed),
                                             driver.device_data(data), block)
    np.testing.assert_array_equal(np.asarray(counts)[0], want_counts)
    np.testing.assert_allclose(np.asarray(probs)[0], want_probs, atol=1e-6)


@pytest.mark.parametrize("at_once", [0, 2])
def test_members_at_once_or_one_at_a_time_agree(sweep4, at_once, fast_compile):
    c, data, hp, r = sweep4  # CPU devices: one member at a time, the device padding skipped
    # (an accelerator: all at once)
    assert driver.members_at_once(c, jax.devices()) == (1 if on_cpus(jax.devices()) else 0)
    c = _config(members_at_once=at_once)  # 0: all of a device's members vmapped
    r2 = driver.run_sweep(c, data, MEMBERS, devices=jax.devices()[:1], progress=False)
    for k in r.history:
        np.testing.assert_allclose(r2.history[k], r.history[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r2.val_probs, r.val_probs, atol=1e-5)
    chex.assert_trees_all_close(r2.state.params, r.state.params, atol=1e-5, rtol=1e-5)


def _map_body_primitives(jaxpr) -> set[str]:
    """The top-level primitives of the body of the first `scan` (the member map) in a jaxpr."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            return {e.primitive.name for e in eqn.params["jaxpr"].jaxpr.eqns}
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found = _map_body_primitives(sub)
            if found:
                return found
    return set()


@pytest.mark.devices(4)
def test_device_padding_is_skipped_one_member_at_a_time(sweep4):
    c, data, hp, r = sweep4
    mesh = driver.group_mesh(jax.devices(), 1)  # members only: 1 member padded to 4 devices
    # Uncached programs: the sweep's own executables stay as test_every_chunk_... counts them.
    init, run, evaluate = driver.compiled_group.__wrapped__(_spec(c, data, "control"), mesh, 1)
    one = jax.tree.map(lambda x: x[:1], hp)
    placed, live = driver.place_members(one, mesh)  # 1 member padded to 4 devices
    np.testing.assert_array_equal(np.asarray(live), [True, False, False, False])
    on_device = jax.device_put(driver.device_data(data),
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    key = jax.random.key(0)
    start = init(key, placed, on_device)
    before = jax.tree.map(np.asarray, start.params)
    # Each member's call sits in a real branch, not a select that trains the padding too.
    jaxpr = jax.make_jaxpr(run, static_argnums=5)(key, placed, live, start, on_device, 1)
    assert "cond" in _map_body_primitives(jaxpr.jaxpr)
    state, loss = run(key, placed, live, start, on_device, 1)
    loss = np.asarray(loss)
    assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all()  # padding: not trained
    assert np.asarray(state.epoch).tolist() == [1, 0, 0, 0]
    for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a)[1:], b[1:])
        assert not np.array_equal(np.asarray(a)[0], b[0])


def test_resume_after_kill_equals_uninterrupted(sweep4, tmp_path, fast_compile):
    c, data, hp, full = sweep4
    ckpt = tmp_path / "ckpt"
    ticks = []
    part = driver.run_sweep(c, data, MEMBERS, checkpoint_dir=ckpt, progress=False,
                           on_chunk=lambda history, done: ticks.append(done) or True)
    assert ticks == [8] and part.epochs_done == 8 and part.val_probs is None
    assert np.isnan(part.history["train_loss"][:, 1:]).all()
    # Killed on 4 devices, resumed on 1: checkpoints hold no device padding.
    resumed = driver.run_sweep(c, data, MEMBERS, checkpoint_dir=ckpt, devices=jax.devices()[:1],
                              progress=False, on_chunk=lambda history, done: ticks.append(done))
    assert ticks == [8, 16, 24]
    assert resumed.epochs_done == 24
    for k in full.history:
        np.testing.assert_allclose(resumed.history[k], full.history[k], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(resumed.state.params, full.state.params, atol=1e-6)
    np.testing.assert_allclose(resumed.val_probs, full.val_probs, atol=1e-6)


def test_any_num_epochs_trains_and_resumes_across_chunkings(sweep4, tmp_path, fast_compile):
    """num_epochs need not be a multiple of eval_every or chunk_epochs: the shorter last period
    is trained, evaluated and checkpointed; a run killed under one chunking resumes under
    another to the uninterrupted run's numbers, and a member trained alone agrees."""
    c, data, hp, full = sweep4
    # Evaluations and chunks end after epochs 8, 16 and 20. Two evaluation blocks: programs of
    # their own, so the sweep's cached ones keep the one executable test_every_chunk_... counts.
    short = _config(num_epochs=20, eval_block_rows=120)
    pair = MEMBERS[:2]  # control and E-Mixup
    whole = driver.run_sweep(short, data, pair, progress=False)
    np.testing.assert_array_equal(whole.eval_epochs, [8, 16, 20])
    assert whole.epochs_done == 20 and np.all(np.asarray(whole.state.epoch) == 20)
    assert np.isfinite(whole.history["train_loss"]).all()
    for k in full.history:  # its first 16 epochs are the 24-epoch run's
        np.testing.assert_allclose(whole.history[k][:, :2], full.history[k][:2, :2], rtol=1e-6,
                                   atol=1e-7)
    ckpt, ticks = tmp_path / "ckpt", []
    driver.run_sweep(short, data, pair, checkpoint_dir=ckpt, progress=False,
                     on_chunk=lambda history, done: ticks.append(done) or True)
    rechunked = _config(num_epochs=20, eval_block_rows=120, chunk_epochs=16,
                        checkpoint_every=16)
    resumed = driver.run_sweep(rechunked, data, pair, checkpoint_dir=ckpt, progress=False,
                               on_chunk=lambda history, done: ticks.append(done))
    assert ticks == [8, 16, 20]  # realigned to the new chunks, then the shorter last one
    for k in whole.history:
        np.testing.assert_allclose(resumed.history[k], whole.history[k], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(resumed.state.params, whole.state.params, atol=1e-6)
    np.testing.assert_allclose(resumed.val_probs, whole.val_probs, atol=1e-6)
    lone = jax.jit(program.make_train(_spec(short, data, "mixup"), short.num_epochs))
    state, metrics = lone(jax.random.key(short.seed), jax.tree.map(lambda x: x[1], hp), data)
    np.testing.assert_array_equal(metrics["epoch"], [8, 16, 20])
    chex.assert_trees_all_close(state.params, jax.tree.map(lambda x: x[1], whole.state.params),
                                atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(metrics["train_loss"], whole.history["train_loss"][1], rtol=1e-5)


def test_one_program_per_kind_and_no_padding_rows(fast_compile):
    """Members of one kind (any alpha, softness, soft switch, trial) share one compiled program;
    a mixing member trains on B/2 rows under halving, the control on B."""
    c = _config()
    data = _data(c)
    on_device = driver.device_data(data)
    key = jax.random.key(0)
    mixup = [dict(method="e_mixup", alpha=0.3, softness=0.0, trial=1, seed=0),
             dict(method="soft_e_mixup", alpha=0.1, softness=0.2, trial=0, seed=3)]
    for kind, member_sets in (("control", [[MEMBERS[0]] * 2, [dict(MEMBERS[0], trial=1)] * 2]),
                              ("mixup", [mixup, mixup[::-1]])):
        chex.clear_trace_counter()  # both kinds' `train` share one code object
        built = program.make_program(_spec(c, data, kind))
        assert built.rows == (c.batch_size if kind == "control" else c.batch_size // 2)
        run = jax.jit(jax.vmap(chex.assert_max_traces(built.train, n=1),
                               in_axes=(None, 0, 0, None, None)), static_argnums=4)
        init = jax.jit(jax.vmap(built.init, in_axes=(None, 0, None)))
        for members in member_sets:
            hp = member_hparams(with_config_settings(c, members))
            _, loss = run(key, hp, init(key, hp, on_device), on_device, 1)
            assert np.isfinite(np.asarray(loss)).all()
    groups = member_groups(MEMBERS + mixup)
    assert [(g.name, list(g.members)) for g in groups] == [
        ("control", [0]), ("mixup", [1, 3, 4]), ("stitchup", [2])]


def test_optimisation_settings_are_member_values_of_one_program_per_kind(fast_compile):
    """A weight decay x dropout x lr_max grid crossed with methods and alphas trains as one
    compiled program per kind, with no compile per value; each member equals the member of a
    sweep whose config holds its values, and the values change what it learns."""
    grids = {"sweep.weight_decay": (1e-5, 1e-3), "sweep.dropout": (0.0, 0.3),
             "sweep.lr_max": (3e-3, 1e-2)}
    # Evaluation blocks of their own: programs no other test compiles, so their count is ours.
    c = _config(num_epochs=8, eval_every=8, chunk_epochs=8, checkpoint_every=8,
                eval_block_rows=96, **{"data.trials": 1, "sweep.methods": ("control", "e_mixup"),
                                       "sweep.alphas": (0.2, 0.4)}, **grids)
    run_train.validate_config(c)
    data = _data(c)
    members = sweep_members(c)
    assert len(members) == (1 + 2) * 2 * 2 * 2
    groups = member_groups(members)
    assert [g.name for g in groups] == ["control", "mixup"]
    # What all members share is a constant of the program; the grids are traced.
    assert all(g.fixed == (("lr_min", 3e-4), ("half_cycle_epochs", 4.0)) for g in groups)
    r = driver.run_sweep(c, data, members, progress=False)
    for g in groups:
        spec = _group_spec(c, data, g)
        _, run, _ = driver.compiled_group(spec, _group_mesh(c, data, g),
                                          driver.members_at_once(c, jax.devices()))
        assert run._cache_size() == 1, g.kind
    loss = r.history["train_loss"][:, -1]
    assert len({round(float(v), 6) for v in loss}) == len(members)  # every value matters
    for i in (0, 7, 13):  # control at the grid's first point, its last, and an E-Mixup member
        m = members[i]
        single = _config(num_epochs=8, eval_every=8, chunk_epochs=8, checkpoint_every=8,
                         eval_block_rows=96, **{"data.trials": 1,
                                                "optim.weight_decay": m["weight_decay"],
                                                "model.dropout": m["dropout"],
                                                "optim.lr_max": m["lr_max"]})
        alone = driver.run_sweep(single, data, [{k: m[k] for k in (
            "method", "alpha", "trial", "seed")}], progress=False)
        every = [setting.name for setting in registry.settings(every_method=True)]
        assert [alone.members[0][k] for k in every] == [m[k] for k in every]
        np.testing.assert_allclose(alone.history["train_loss"][0], r.history["train_loss"][i],
                                   rtol=1e-5)
        np.testing.assert_allclose(alone.val_probs[0], r.val_probs[i], atol=1e-5)


def test_profile_traces_training_steps_and_changes_no_number(sweep4, tmp_path, fast_compile):
    """config.profile=N: a jax.profiler trace (XPlane for TensorBoard, a Perfetto trace) of the
    periods after the first compiled call, and the same results as without it."""
    import gzip
    import json

    c, data, hp, full = sweep4
    traced = _config(profile=100)  # 10 steps an epoch, 8 epochs a period: periods 2 and 3
    r = driver.run_sweep(traced, data, MEMBERS, progress=False, profile_dir=tmp_path / "profile")
    for k in full.history:
        np.testing.assert_array_equal(r.history[k], full.history[k])
    (session,) = (tmp_path / "profile" / "plugins" / "profile").iterdir()
    assert list(session.glob("*.xplane.pb"))
    with gzip.open(session / "perfetto_trace.json.gz") as f:
        assert json.load(f)["traceEvents"]
    with pytest.raises(ValueError, match="profile=-1 must be >= 0"):
        driver.run_sweep(_config(profile=-1), data, MEMBERS, progress=False,
                         profile_dir=tmp_path / "never")


def test_every_chunk_runs_one_compiled_program(sweep4):
    c, data, hp, r = sweep4  # 24 epochs in chunks of 8: three calls of one executable per kind
    devices = jax.devices()
    for g in member_groups(with_config_settings(c, MEMBERS)):
        spec = _group_spec(c, data, g)  # one member of each kind, whole on one CPU device
        mesh = _group_mesh(c, data, g)
        assert mesh.shape == {"members": len(devices), "features": 1}
        _, run, _ = driver.compiled_group(spec, mesh, driver.members_at_once(c, devices))
        assert run._cache_size() == 1


def test_program_spec_holds_every_knob_the_program_reads():
    c = _config()
    base = program.ProgramSpec.from_config(c, 6, 80)
    assert base == program.ProgramSpec.from_config(_config(), 6, 80)
    assert hash(base) == hash(program.ProgramSpec.from_config(_config(), 6, 80))
    # Knobs the program does not read, and the members' traced settings (the learning-rate
    # cycle, the weight decay and the dropout rate among them), leave the spec (and so the
    # compiled program) alone.
    for key, value in [("num_epochs", 48), ("checkpoint_every", 24), ("sweep.alphas", (0.4,)),
                       ("seed", 3), ("data.trials", 3), ("optim.lr_max", 1e-2),
                       ("optim.lr_min", 1e-4), ("optim.half_cycle_epochs", 6),
                       ("optim.weight_decay", 1e-3), ("model.dropout", 0.5),
                       ("sweep.weight_decay", (1e-5, 1e-3))]:
        assert program.ProgramSpec.from_config(_config(**{key: value}), 6, 80) == base, key
    for key, value in [("threshold", 0.7), ("eval_every", 4), ("eval_block_rows", 64),
                       ("model.hidden", (16,)), ("optim.optimizer", "sgd"),
                       ("augment.pairing", "flip"), ("augment.negative_mass", 0.5),
                       ("batch_size", 16)]:
        assert program.ProgramSpec.from_config(_config(**{key: value}), 6, 80) != base, key
    with pytest.raises(TypeError, match="ProgramSpec"):
        program.make_program(c)


@pytest.mark.parametrize("block", [64, 100])
def test_blockwise_evaluation_equals_one_shot(sweep4, block, fast_compile):
    c, data, hp, r = sweep4  # 240 validation rows: blocks of 64 (last padded) or 100
    on_device = driver.device_data(data)
    for kind, idx in ((g.kind, g.members) for g in member_groups(MEMBERS)):
        built = program.make_program(_spec(c, data, kind))
        evaluate = jax.jit(jax.vmap(built.evaluate, in_axes=(0, 0, None, None)))
        params = jax.tree.map(lambda x: x[idx], r.state.params)
        member_hp = jax.tree.map(lambda x: x[idx], hp)
        blocks = [evaluate(params, member_hp, on_device, b) for b in driver.eval_blocks(data, block)]
        n_val = data.val_idx.shape[1]
        probs = np.concatenate([np.asarray(p) for _, p in blocks], axis=1)[:, :n_val]
        np.testing.assert_allclose(probs, r.val_probs[idx], atol=1e-6)
        counts = sum(np.asarray(counts) for counts, _ in blocks)
        metrics = program.metrics_from_counts(counts)
        for k, v in metrics.items():
            np.testing.assert_array_equal(v, r.history[k][idx, -1])
        # The device's counts are the host's rule applied to the probabilities it returned.
        for j, i in enumerate(idx):
            t = int(MEMBERS[i]["trial"])
            labels = np.asarray(data.labels)[np.asarray(data.val_idx)[t]]
            np.testing.assert_array_equal(counts[j], threshold_counts(
                probs[j], labels, np.asarray(data.seen_mask)[t], c.threshold,
                np.ones(n_val, np.int32)))


def test_dataset_larger_than_the_device_budget_streams_to_the_same_results(sweep4, tmp_path,
                                                                            fast_compile):
    """A memory-mapped dataset larger than config.device_data_bytes: only the training rows and
    one evaluation block at a time reach the device, and every result equals the in-memory
    run's."""
    from embaug_jax.dataset import load_embeddings, save_embeddings

    c, data, hp, full = sweep4
    ds = run_train.load_data(c)
    save_embeddings(tmp_path / "ds", np.asarray(ds.embeddings), np.asarray(ds.labels),
                    list(ds.class_names))
    mapped = load_embeddings(tmp_path / "ds")
    assert isinstance(mapped.embeddings, np.memmap)
    host = program.TrainData(mapped.embeddings, np.asarray(data.labels), np.asarray(data.train_idx),
                           np.asarray(data.val_idx), np.asarray(data.seen_mask))
    budget = int(0.75 * mapped.embeddings.nbytes)
    small = _config(device_data_bytes=budget)
    r = driver.run_sweep(small, host, MEMBERS, progress=False)
    assert r.device_data_bytes <= budget < mapped.embeddings.nbytes
    assert r.eval_block_rows < data.val_idx.shape[1]  # several blocks
    for k in full.history:
        np.testing.assert_allclose(r.history[k], full.history[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r.val_probs, full.val_probs, atol=1e-6)
    with pytest.raises(ValueError, match="device_data_bytes=1000 cannot hold"):
        driver.run_sweep(_config(device_data_bytes=1000), host, MEMBERS, progress=False)


def test_unseen_classes_never_get_loss(sweep4):
    # A class with no gradient keeps Adam's first and second moments at exactly zero; AdamW's
    # decoupled weight decay does not touch them. Every other class must have moved them.
    c, data, hp, r = sweep4
    moments = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(r.state.opt_state)
               if "head" in jax.tree_util.keystr(path) and "kernel" in jax.tree_util.keystr(path)]
    assert len(moments) == 2  # mu and nu
    seen = np.asarray(data.seen_mask)[np.asarray(hp.trial)]  # [M, C]
    assert (~seen).sum(1).min() >= 1  # the held-out class
    for m in moments:
        m = np.abs(np.asarray(m))  # [M, C, hidden]: kernels are stored [out, in]
        for i in range(len(MEMBERS)):
            assert np.all(m[i][~seen[i]] == 0)
            assert np.all(m[i][seen[i]].max(1) > 0)


def test_triangular_schedule_matches_optax_linear_pieces():
    sched = optim.triangular_schedule(3e-4, 3e-3, 5)
    pieces = [optax.linear_schedule(3e-4, 3e-3, 5), optax.linear_schedule(3e-3, 3e-4, 5)] * 3
    ref = optax.join_schedules(pieces, boundaries=[5 * i for i in range(1, 6)])
    steps = jnp.arange(30)
    np.testing.assert_allclose(jax.vmap(sched)(steps), jax.vmap(ref)(steps), rtol=1e-6)
    assert float(sched(0)) == pytest.approx(3e-4) and float(sched(5)) == pytest.approx(3e-3)


@pytest.mark.parametrize("key,value,match", [
    ("sweep.methods", ("control", "mixup"), "unknown method 'mixup'"),
    ("sweep.alphas", (0.2, 0.0), "alpha=0.0"),
    ("sweep.alphas", (-1.0,), "must be > 0"),
    ("sweep.softness", (1.5,), "softness=1.5"),
    ("data.train_fraction", 1.0, "train_fraction"),
    ("data.trials", 0, "trials"),
    ("data.source", "s3", "data.source"),
    ("model.head", "tanh", "head"),
    ("optim.optimizer", "lion", "optimizer"),
    ("optim.lr_min", 1.0, "lr_min"),
    ("optim.weight_decay", -1.0, r"config.optim.weight_decay=-1 must be >= 0"),
    ("model.dropout", 1.0, r"config.model.dropout=1 must be in \[0, 1\)"),
    ("sweep.weight_decay", (1e-4, -1.0), r"weight_decay=-1.0 in config.sweep.weight_decay"),
    ("sweep.dropout", (0.1, 1.0), r"dropout=1.0 in config.sweep.dropout must be in \[0, 1\)"),
    ("sweep.lr_min", (1e-4, 1e-2), r"every lr_min \(config.sweep.lr_min=0.0001, 0.01\) must "
     r"be <= every lr_max \(config.optim.lr_max=0.003\)"),
    ("sweep.half_cycle_epochs", (2.5,), "must be whole epochs"),
    ("augment.pairing", "zip", "pairing"),
    ("batch_size", 15, "batch_size"),
    ("eval_every", 5, "multiple of"),
    ("checkpoint_every", 12, "multiple of"),
    ("chunk_epochs", 12, "multiple of"),
    ("chunk_epochs", 16, "checkpoint_every=8 must be a multiple of config.chunk_epochs=16"),
    ("chunk_epochs", 0, "must be >= 1"),
    ("num_epochs", 0, "num_epochs=0 must be >= 1"),
    ("threshold", 1.2, r"config.threshold=1.2 must lie in \(0, 1\)"),
    ("report.selection_fraction", 1.0, "config.report.selection_fraction=1.0"),
    ("report.bootstrap_resamples", -1, "config.report.bootstrap_resamples=-1"),
    ("report.axis_metrics", ("weighted_auc", "auc"),
     r"config.report.axis_metrics=\('weighted_auc', 'auc'\) must name .*unknown: 'auc'"),
    ("eval_block_rows", 0, "eval_block_rows"),
    ("cpu_devices", -2, "cpu_devices"),
    ("members_at_once", -1, "members_at_once"),
    ("devices_per_member", 3, "devices_per_member=3 must be >= 1 and divide the"),
    ("devices_per_member", 8, "devices_per_member=8 must be >= 1 and divide the"),
])
def test_bad_config_values(key, value, match):
    c = _config(**{"sweep.methods": ("control", "soft_e_mixup"), key: value})
    with pytest.raises(ValueError, match=match):
        run_train.validate_config(c)


def test_bad_data(tmp_path):
    c = _config(**{"data.source": "file"})
    with pytest.raises(ValueError, match="config.data.path is not set"):
        run_train.train_and_evaluate(c, tmp_path / "a")
    c.data.path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing"):
        run_train.train_and_evaluate(c, tmp_path / "b")
    c = _config(batch_size=128)
    with pytest.raises(ValueError, match="batch_size=128 exceeds"):
        program.make_program(program.ProgramSpec.from_config(c, 6, 80))
    ds = make_synthetic(0, 40, 4, 3)
    bad = ds.embeddings.copy()
    bad[7, 1] = np.nan
    from embaug_jax.dataset import save_embeddings
    with pytest.raises(ValueError, match="7"):
        save_embeddings(tmp_path / "nan", bad, ds.labels, ds.class_names)


def test_holdout_classes_is_a_count_or_class_names():
    import ml_collections

    d = ml_collections.ConfigDict(dict(holdout_classes=" class_001, class_004"))
    assert run_train._holdout(d) == ["class_001", "class_004"]
    d.holdout_classes = "2"
    assert run_train._holdout(d) == 2
    d.holdout_classes = "7,"  # one class whose name is a number
    assert run_train._holdout(d) == ["7"]
    d.holdout_classes = ""
    assert run_train._holdout(d) == []


def test_ablation_baselines_train_in_the_sweep(fast_compile):
    """The control-kind baselines at zero strength are the control, member for member; at their
    settings they differ from it; manifold mixup is its own kind (its own program) and a member
    trained alone equals itself in the sweep; the others' numbers do not move because it is
    there."""
    c = _config(num_epochs=8, eval_every=8, checkpoint_every=8)
    c.chunk_epochs = 8
    data = _data(c)
    base = dict(alpha=0.0, softness=0.0, smoothing=0.0, noise_std=0.0, drop_rate=0.0, trial=0,
                seed=0)
    members = [dict(base, method="control"),
               dict(base, method="label_smoothing"), dict(base, method="gaussian_noise"),
               dict(base, method="feature_dropout"),
               dict(base, method="label_smoothing", smoothing=0.2),
               dict(base, method="gaussian_noise", noise_std=0.5),
               dict(base, method="feature_dropout", drop_rate=0.3),
               dict(base, method="soft_control", softness=0.05),
               dict(base, method="manifold_mixup", alpha=0.4)]
    assert [(g.name, list(g.members)) for g in member_groups(members)] == [
        ("control", list(range(8))), ("manifold", [8])]
    r = driver.run_sweep(c, data, members, progress=False)
    loss = r.history["train_loss"]
    for i in (1, 2, 3):
        np.testing.assert_allclose(loss[i], loss[0], rtol=1e-6)
        np.testing.assert_allclose(r.val_probs[i], r.val_probs[0], atol=1e-6)
    for i in (4, 5, 6, 7, 8):
        assert np.isfinite(loss[i]).all() and not np.allclose(loss[i], loss[0])
    # The control without manifold mixup in the sweep: the same numbers.
    alone = driver.run_sweep(c, data, members[:1], progress=False)
    np.testing.assert_allclose(alone.history["train_loss"][0], loss[0], rtol=1e-5)
    np.testing.assert_allclose(alone.val_probs[0], r.val_probs[0], atol=1e-5)
    lone = jax.jit(program.make_train(_spec(c, data, "manifold"), c.num_epochs))
    hp = member_hparams(with_config_settings(c, members))
    state, metrics = lone(jax.random.key(c.seed), jax.tree.map(lambda x: x[8], hp), data)
    chex.assert_trees_all_close(state.params, jax.tree.map(lambda x: x[8], r.state.params),
                                atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(metrics["train_loss"], loss[8], rtol=1e-5)
