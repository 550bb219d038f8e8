"""embaug_jax.util: atomic output (success replaces the target whole; failure leaves it and no
temporaries), is_traced, list_first."""

import json
import os

import pytest

from embaug_jax.util import (
    LOCK_FILE,
    UserError,
    atomic_path,
    is_traced,
    list_first,
    write_json_atomic,
    write_text_atomic,
    workdir_lock,
)


def test_file_written_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, replace=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_replaced_whole_only_when_recognised(tmp_path):
    target = tmp_path / "ds"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
        (tmp / "stale").write_text("x")
    ours = lambda p: (p / "a").is_file()  # noqa: E731  what the writer recognises as its own
    with atomic_path(target, replace=ours) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert (target / "a").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    # A folder is never replaced without a predicate, nor one the predicate does not know.
    (target / "a").unlink()
    (target / "paper.tex").write_text("mine")
    for replace in (False, True, ours):
        with pytest.raises(UserError, match="ds already exists and is a folder that embaug_jax "
                                            "did not write; it is left untouched"):
            with atomic_path(target, replace=replace) as tmp:
                tmp.mkdir()
    assert [p.name for p in target.iterdir()] == ["paper.tex"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_a_file_is_replaced_only_when_allowed(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    with pytest.raises(UserError, match="out.txt already exists and is a file"):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "mine"
    # A file that appears while the block runs is not replaced either.
    late = tmp_path / "late.txt"
    with pytest.raises(UserError, match="late.txt already exists"):
        with atomic_path(late) as tmp:
            tmp.write_text("new")
            late.write_text("theirs")
    assert late.read_text() == "theirs"
    write_text_atomic(target, "new")  # the writers of a command's own files replace them
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.txt", "out.txt"]


def test_the_workdir_lock_never_follows_a_link_and_refuses_root_and_home(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "notes.txt").write_text("precious")
    work = tmp_path / "w"
    work.mkdir()
    (work / LOCK_FILE).symlink_to(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="is a symbolic link"):
        with workdir_lock(work, "train"):
            pass
    assert (tmp_path / "notes.txt").read_text() == "precious"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for folder, what in (("/", "the filesystem root"), (tmp_path / "home", "the home folder"),
                         ("~", "the home folder")):
        with pytest.raises(UserError, match=f"is {what}; a run keeps its files"):
            with workdir_lock(folder, "train"):
                pass
    assert list((tmp_path / "home").iterdir()) == []


def test_json_and_parent_creation(tmp_path):
    target = tmp_path / "deep" / "er" / "r.json"
    write_json_atomic(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}


def test_list_first_names_a_few_and_counts_the_rest():
    import numpy as np

    assert list_first([3, 1]) == "3, 1"
    assert list_first(np.arange(25)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... and 15 more"
    assert list_first(["a", "b", "c"], 2, sep="\n  ") == "a\n  b\n  ... and 1 more"
    assert list_first([]) == ""


def test_is_traced_only_under_a_transformation():
    import jax
    import jax.numpy as jnp

    seen = []
    jax.jit(lambda x: seen.append(is_traced(x)) or x)(jnp.ones(2))
    jax.vmap(lambda x: seen.append(is_traced(x)) or x)(jnp.ones(2))
    assert seen == [True, True]
    assert not is_traced(jnp.ones(2)) and not is_traced(1.0)


def test_unrolled_cpu_threefry_gives_the_random123_answers_and_the_rolled_bits():
    import subprocess
    import sys

    import jax
    import jax.extend.random as jex_random
    import numpy as np

    from embaug_jax.util import unroll_cpu_threefry

    assert unroll_cpu_threefry() and unroll_cpu_threefry()  # idempotent
    # Known answers of Threefry-2x32 with 20 rounds (Random123's kat_vectors).
    kat = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
           ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
           ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
    hash_ = jax.jit(jex_random.threefry_2x32)
    for key, count, expected in kat:
        out = hash_(np.array(key, np.uint32), np.array(count, np.uint32))
        assert [int(v) for v in np.asarray(out)] == list(expected)
    # The bits a training program draws equal those of a process with JAX's own (rolled) lowering.
    draw = ("import hashlib, jax, numpy as np; k = jax.random.key(7); "
            "b = jax.jit(lambda k: jax.random.bits(jax.random.fold_in(k, 3), (3, 1000)))(k); "
            "d = jax.jit(lambda k: jax.random.bernoulli(k, 0.7, (64, 250)))(k); "
            "print(hashlib.sha256(np.asarray(b).tobytes() + np.asarray(d).tobytes()).hexdigest())")
    rolled = subprocess.run([sys.executable, "-c", draw], capture_output=True, text=True,
                            check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout
    here = {}
    exec(draw.replace("print(", "here['h'] = ("), {"here": here})
    assert rolled.strip() == here["h"]


def test_split_cpu_into_devices_before_the_backend_and_never_over_a_choice():
    import subprocess
    import sys

    probe = ("import jax; from embaug_jax.util import split_cpu_into_devices as s; "
             "first = s({n}); print(first, s(2), len(jax.devices()), s(2))")

    def run(n, **env):
        base = {k: v for k, v in os.environ.items()
                if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        out = subprocess.run([sys.executable, "-c", probe.format(n=n)], capture_output=True,
                             text=True, check=True,
                             env={**base, "JAX_PLATFORMS": "cpu", **env}).stdout.split()
        return out[0] == "True", out[1] == "True", int(out[2]), out[3] == "True"

    # The first call sets the count; a second (already chosen) and one after start-up do not.
    assert run(3) == (True, False, 3, False)
    assert run(0) == (True, False, min(os.cpu_count(), 8), False)
    # The user's own choice wins.
    assert run(3, XLA_FLAGS="--xla_force_host_platform_device_count=2") == (False, False, 2,
                                                                            False)
    assert run(3, JAX_NUM_CPU_DEVICES="1") == (False, False, 1, False)
    from embaug_jax.util import UserError, split_cpu_into_devices

    with pytest.raises(UserError, match="cpu_devices=-1"):
        split_cpu_into_devices(-1)
