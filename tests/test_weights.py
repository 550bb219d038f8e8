"""Strict merging of converted checkpoints, safetensors files, content hashes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from embaug_jax.embed import weights
from embaug_jax.util import UserError


def _expected():
    return {"dense": {"kernel": jax.ShapeDtypeStruct((3, 4), jnp.float32),
                      "bias": jax.ShapeDtypeStruct((4,), jnp.float32)},
            "norm": {"scale": np.zeros((4,), np.float16)}}


def test_nested_trees_are_stored_by_slash_paths(tmp_path):
    tree = {"a": {"b": np.int32(1), "c": {"d": np.int32(2)}}, "e": np.int32(3)}
    weights.save_safetensors(tmp_path / "t.safetensors", tree)
    flat, _ = weights.load_safetensors(tmp_path / "t.safetensors")
    assert flat == {"a/b": 1, "a/c/d": 2, "e": 3}
    assert traverse_util.unflatten_dict(flat, sep="/") == tree


def test_merge_strict_places_and_casts():
    loaded = {"dense/kernel": np.ones((3, 4), np.float64), "dense/bias": np.arange(4),
              "norm/scale": np.full(4, 2.0)}
    tree = weights.merge_strict(_expected(), loaded)
    assert tree["dense"]["kernel"].dtype == np.float32
    assert tree["norm"]["scale"].dtype == np.float16
    np.testing.assert_array_equal(tree["dense"]["bias"], np.arange(4))


def test_merge_strict_names_every_problem():
    loaded = {"dense/kernel": np.ones((4, 3)), "norm/scale": np.ones(4), "head/w": np.ones(2)}
    with pytest.raises(ValueError) as e:
        weights.merge_strict(_expected(), loaded, source="ckpt.safetensors")
    msg = str(e.value)
    assert "ckpt.safetensors" in msg
    assert "missing from the checkpoint (1):\n    dense/bias" in msg
    assert "unexpected in the checkpoint (1):\n    head/w" in msg
    assert "dense/kernel: expected (3, 4), got (4, 3)" in msg


def test_safetensors_round_trip_is_atomic(tmp_path):
    tree = {"a": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.ones(2, np.int32)}
    weights.save_safetensors(tmp_path / "w.safetensors", tree, {"variant": "b4"})
    flat, meta = weights.load_safetensors(tmp_path / "w.safetensors")
    assert meta == {"variant": "b4", "written_by": "embaug_jax"}
    np.testing.assert_array_equal(flat["a/w"], tree["a"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    weights.save_safetensors(tmp_path / "flat.safetensors", flat)  # an already flat dict
    again, _ = weights.load_safetensors(tmp_path / "flat.safetensors")
    assert again.keys() == flat.keys()
    (tmp_path / "flat.safetensors").unlink()
    with pytest.raises(ValueError, match="a: dtype object"):  # fails before anything is written
        weights.save_safetensors(tmp_path / "x.safetensors", {"a": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        weights.load_safetensors(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        weights.load_safetensors(tmp_path / "none.safetensors")
    # A later save replaces a file this project wrote, never anything else.
    weights.save_safetensors(tmp_path / "w.safetensors", tree, {"variant": "b0"})
    assert weights.load_safetensors(tmp_path / "w.safetensors")[1]["variant"] == "b0"
    with pytest.raises(UserError, match="junk.safetensors already exists and is a file"):
        weights.save_safetensors(tmp_path / "junk.safetensors", tree)
    assert (tmp_path / "junk.safetensors").read_bytes() == b"\x00\x01garbage"


def test_hash_files_tracks_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    h = weights.hash_files([a, b])
    assert h == weights.hash_files([a, b])
    assert h != weights.hash_files([b, a])
    import hashlib
    expected = hashlib.sha256(hashlib.sha256(b"one").hexdigest().encode()
                              + hashlib.sha256(b"two").hexdigest().encode()).hexdigest()
    assert h == expected
    b.write_bytes(b"three")  # size changes, so the memo does not hide the edit
    assert weights.hash_files([a, b]) != h
    with pytest.raises(FileNotFoundError):
        weights.hash_files([tmp_path / "missing"])
