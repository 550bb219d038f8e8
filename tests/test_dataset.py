"""The embedding dataset format: round trips and every validation error."""

import json

import numpy as np
import pytest

from embaug_jax.dataset import EmbeddingDataset, Segment, load_embeddings, save_embeddings


def _arrays(n=12, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n),
            [f"class_{i}" for i in range(c)])


@pytest.mark.parametrize("name", ["ds", "ds.npz"])
def test_round_trip(tmp_path, name):
    x, y, names = _arrays()
    ids = [f"item{i}" for i in range(len(y))]
    segs = [("title", 2), {"name": "image", "size": 4}]
    save_embeddings(tmp_path / name, x, y, names, ids=ids, segments=segs, info={"model": "m"})
    ds = load_embeddings(tmp_path / name)
    np.testing.assert_array_equal(ds.embeddings, x)
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.class_names == names
    assert ds.ids.tolist() == ids
    assert ds.segments == [Segment("title", 2), Segment("image", 4)]
    assert ds.segment_sizes == (2, 4)
    assert ds.info == {"model": "m"}
    assert (len(ds), ds.dim, ds.num_classes) == (12, 6, 3)
    np.testing.assert_array_equal(np.bincount(ds.labels, minlength=ds.num_classes),
                                  np.bincount(y, minlength=3))


def test_directory_is_memory_mapped(tmp_path):
    x, y, names = _arrays()
    save_embeddings(tmp_path / "ds", x, y, names)
    assert isinstance(load_embeddings(tmp_path / "ds").embeddings, np.memmap)
    assert not isinstance(load_embeddings(tmp_path / "ds", mmap=False).embeddings, np.memmap)


def test_overwrite_replaces_whole_directory(tmp_path):
    x, y, names = _arrays()
    save_embeddings(tmp_path / "ds", x, y, names, ids=[str(i) for i in range(12)])
    save_embeddings(tmp_path / "ds", x[:5], y[:5], names)
    ds = load_embeddings(tmp_path / "ds")
    assert len(ds) == 5 and ds.ids is None  # the stale ids.npy is gone


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, y, n: (_set(x, (3, 1), np.nan), y, n), r"NaN or Inf embeddings in 1 row\(s\): 3"),
        (lambda x, y, n: (_set(x, (7, 0), np.inf), y, n), r"row\(s\): 7"),
        (lambda x, y, n: (x, _set(y, 4, 3), n), r"labels outside \[0, 3\) in rows 4"),
        (lambda x, y, n: (x, _set(y, 0, -1), n), r"labels outside"),
        (lambda x, y, n: (x, y[:-1], n), r"mismatched lengths"),
        (lambda x, y, n: (x[:0], y[:0], n), r"empty"),
        (lambda x, y, n: (x[:, 0], y, n), r"2-D"),
        (lambda x, y, n: (x, y.astype(np.float32), n), r"integer class ids"),
        (lambda x, y, n: (x.astype(np.int32), y, n), r"floating point"),
        (lambda x, y, n: (x, y, ["a", "a", "b"]), r"duplicate class names"),
        (lambda x, y, n: (x, y, []), r"class_names. is empty"),
    ],
)
def test_save_rejects_bad_input_and_writes_nothing(tmp_path, mutate, match):
    x, y, names = _arrays()
    x, y, names = mutate(x.copy(), y.copy(), names)
    with pytest.raises(ValueError, match=match):
        save_embeddings(tmp_path / "ds", x, y, names)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def _set(a, idx, value):
    a = a.copy()
    a[idx] = value
    return a


def test_bad_ids_and_segments(tmp_path):
    x, y, names = _arrays()
    with pytest.raises(ValueError, match="duplicate ids"):
        save_embeddings(tmp_path / "d", x, y, names, ids=["a"] * 12)
    with pytest.raises(ValueError, match="mismatched lengths: `ids`"):
        save_embeddings(tmp_path / "d", x, y, names, ids=["a", "b"])
    with pytest.raises(ValueError, match=r"sum to 5, but .* D=6"):
        save_embeddings(tmp_path / "d", x, y, names, segments=[("a", 2), ("b", 3)])
    with pytest.raises(ValueError, match="duplicate segment names"):
        save_embeddings(tmp_path / "d", x, y, names, segments=[("a", 3), ("a", 3)])
    with pytest.raises(ValueError, match="JSON"):
        save_embeddings(tmp_path / "d", x, y, names, info={"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_load_validates_files_written_by_hand(tmp_path):
    x, y, names = _arrays()
    save_embeddings(tmp_path / "ds", x, y, names)
    bad = x.copy()
    bad[[2, 9]] = np.nan
    np.save(tmp_path / "ds" / "embeddings.npy", bad)
    with pytest.raises(ValueError, match=r"2 row\(s\): 2, 9"):
        load_embeddings(tmp_path / "ds")
    assert len(load_embeddings(tmp_path / "ds", validate=False)) == 12

    (tmp_path / "ds" / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="missing labels.npy"):
        load_embeddings(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_embeddings(tmp_path / "nowhere")
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match="expected a dataset directory .* or a .npz"):
        load_embeddings(tmp_path / "x.npy")


def test_load_rejects_foreign_metadata(tmp_path):
    x, y, names = _arrays()
    save_embeddings(tmp_path / "ds", x, y, names)
    meta = tmp_path / "ds" / "meta.json"
    meta.write_text(json.dumps({"format_version": 99, "class_names": names}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_embeddings(tmp_path / "ds")
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_embeddings(tmp_path / "ds")


def test_links_to_a_dataset_load_and_info_may_be_null(tmp_path):
    x, y, names = _arrays()
    save_embeddings(tmp_path / "ds", x, y, names, info={"source": "hand"})
    save_embeddings(tmp_path / "ds.npz", x, y, names)
    (tmp_path / "link").symlink_to(tmp_path / "ds")
    (tmp_path / "link.npz").symlink_to(tmp_path / "ds.npz")
    assert load_embeddings(tmp_path / "link").info == {"source": "hand"}
    np.testing.assert_array_equal(load_embeddings(tmp_path / "link.npz").embeddings, x)
    meta = tmp_path / "ds" / "meta.json"
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), info=None)))
    assert load_embeddings(tmp_path / "ds").info == {}


def test_nan_check_is_chunked_for_large_files(tmp_path, monkeypatch):
    import embaug_jax.dataset as dataset

    monkeypatch.setattr(dataset, "_CHUNK_ROWS", 4)
    x, y, names = _arrays(n=30)
    x[29, 5] = np.nan  # in the last, partial chunk
    with pytest.raises(ValueError, match=r"row\(s\): 29"):
        EmbeddingDataset(x, y, names).validate()


def test_blocks_stream_into_the_same_bytes(tmp_path):
    x, y, names = _arrays(n=10)
    blocks = []
    for i, (start, stop) in enumerate([(0, 4), (4, 5), (5, 10)]):
        blocks.append(tmp_path / f"block{i}.npy")
        np.save(blocks[-1], x[start:stop])
    ids = [f"item{i}" for i in range(len(y))]
    save_embeddings(tmp_path / "whole", x, y, names, ids=ids, segments=[("a", 6)])
    written = save_embeddings(tmp_path / "streamed", blocks, y, names, ids=ids,
                              segments=[("a", 6)])
    np.testing.assert_array_equal(written.embeddings, x)
    for f in ("embeddings.npy", "labels.npy", "ids.npy", "meta.json"):
        assert (tmp_path / "streamed" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes()
    # Every check still runs: a NaN names its row in the whole array, not in its block.
    bad = x[5:10].copy()
    bad[2, 1] = np.nan
    np.save(blocks[2], bad)
    with pytest.raises(ValueError, match=r"NaN or Inf embeddings in 1 row\(s\): 7"):
        save_embeddings(tmp_path / "nan", blocks, y, names)
    assert not (tmp_path / "nan").exists()
    np.save(blocks[2], x[5:10, :5])
    with pytest.raises(ValueError, match="equal widths"):
        save_embeddings(tmp_path / "ragged", blocks, y, names)
    np.save(blocks[2], x[5:10])
    with pytest.raises(ValueError, match="mismatched lengths"):
        save_embeddings(tmp_path / "short", blocks, y[:9], names)
    npz = save_embeddings(tmp_path / "one.npz", blocks, y, names)
    np.testing.assert_array_equal(npz.embeddings, x)
