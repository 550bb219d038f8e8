"""Shared test set-up and helpers (test files share them through here, never by importing
each other).

Four host devices are forced before JAX is imported, so multi-device tests (sharded sweeps,
sharded extraction) run in-process; single-device tests simply use the default device. The
session, its test processes and the processes its tests start share one persistent compilation
cache, new each session, so a program is compiled once however many runs use it.
Markers: `slow` (heavy end-to-end runs; `make test-fast` skips them), `needs_wordnet` and
`needs_fashion_mnist` (skipped where Debian's data package is not installed), `devices(n)` (a
test that needs n devices: skipped on an accelerator with fewer, as in
benchmarks/device_check.py on one GPU; on a CPU, where four are forced, fewer is an error).
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

# One persistent compilation cache for the session, its test processes (pytest-xdist) and every
# process they start (they inherit the environment): a program compiled once, in any of them, is
# read back by the others. The folder is new each session, so no test sees programs an earlier
# session compiled; the process that made it removes it. A size limit turns on JAX's file lock
# around each read and write (without one, a process could read another's half-written entry);
# it is far above what a session writes, so nothing is evicted.
_CACHE_OWNER = "EMBAUG_TEST_COMPILATION_CACHE"
_COMPILATION_CACHE = os.environ.get(_CACHE_OWNER)
_OWN_CACHE = _COMPILATION_CACHE is None
if _OWN_CACHE:
    _COMPILATION_CACHE = tempfile.mkdtemp(prefix="embaug_test_jax_cache.")
    os.environ[_CACHE_OWNER] = _COMPILATION_CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILATION_CACHE
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(64 << 30)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from embaug_jax import configlib  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)

# The data packages where the extract configs look for them.
_common = configlib.load_module(Path(__file__).resolve().parent.parent / "configs" / "extract"
                                / "common.py")
_NEEDS = {
    "needs_wordnet": (Path(_common.source("wordnet").root) / "data.noun",
                      "needs Debian's wordnet-base (sudo apt-get install wordnet-base)"),
    "needs_fashion_mnist": (Path(_common.source("fashion_mnist").root)
                            / "t10k-images-idx3-ubyte.gz",
                            "needs Debian's dataset-fashion-mnist (sudo apt-get install "
                            "dataset-fashion-mnist)"),
}


def pytest_configure(config):
    for name, (_, reason) in _NEEDS.items():
        config.addinivalue_line("markers", f"{name}: {reason}")
    config.addinivalue_line("markers", "devices(n): needs n devices of the default backend")


# Memory one test process may hold at its peak: the largest process of a full run on the
# 2-core machine was 5.0 GiB (benchmarks/README.md, "tests").
_WORKER_BYTES = 6 << 30


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (`make test`): one test process per usable core, no more than memory holds.
    Every process forces its own 4 CPU devices, whose XLA thread pools share the cores."""
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(cores, memory // _WORKER_BYTES))


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
    for name, (path, reason) in _NEEDS.items():
        if item.get_closest_marker(name) and not path.exists():
            pytest.skip(reason)
    marker = item.get_closest_marker("devices")
    if marker and len(jax.devices()) < marker.args[0]:
        message = (f"needs {marker.args[0]} devices; the default backend "
                   f"({jax.default_backend()}) has {len(jax.devices())}")
        if jax.default_backend() == "cpu":
            pytest.fail(f"{message}, where this conftest forces 4 (XLA_FLAGS set another count)")
        pytest.skip(message)


@contextlib.contextmanager
def _most_optimizations_off():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture
def fast_compile():
    """Turns most XLA optimisations off for tests where compile time dominates run time."""
    with _most_optimizations_off():
        yield


@pytest.fixture(scope="session")
def fast_compiling():
    """`with fast_compiling():` turns most XLA optimisations off inside the block: for a module
    or session fixture's run, where the test-scoped `fast_compile` cannot reach."""
    return _most_optimizations_off


@pytest.fixture(scope="session")
def make_table():
    """make_table(folder, n=11, seed=0) -> a CSV of n items (sku, title, description, category
    c0..c2) in `folder`."""
    import pandas as pd

    def make(folder: Path, n: int = 11, *, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        words = ["red", "blue", "soft", "cotton", "shirt", "jeans", "linen", "warm", "coat"]
        rows = [{"sku": f"s{i:03d}", "title": " ".join(rng.choice(words, 3)),
                 "description": " ".join(rng.choice(words, 6)), "category": f"c{i % 3}"}
                for i in range(n)]
        path = folder / "items.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        return path

    return make


@pytest.fixture(scope="session")
def write_fashion_products():
    """write_fashion_products(root, n=6, corrupt=(), missing=()) -> the ids of a tiny data set in
    the Kaggle "Fashion Product Images" layout (item 1003 has no JSON, one row no label)."""
    from PIL import Image

    def write(root: Path, *, n: int = 6, corrupt=(), missing=()) -> list[str]:
        (root / "styles").mkdir(parents=True)
        (root / "images").mkdir()
        header = ("id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
                  "productDisplayName")
        lines, ids = [header], []
        kinds = ["Tshirts", "Shirts", "Watches"]
        rng = np.random.default_rng(0)
        for i in range(n):
            item = str(1000 + i)
            ids.append(item)
            name = f"Item {i} Casual Top" if i != 2 else "Puma Men, Women Unisex Tee, Black"
            lines.append(
                f"{item},Men,Apparel,Topwear,{kinds[i % 3]},Blue,Summer,2012,Casual,{name}")
            if i != 3:  # item 3 has no JSON
                (root / "styles" / f"{item}.json").write_text(json.dumps({"data": {
                    "productDescriptors": {"description": {
                        "value": f"<p>Soft <b>cotton</b> &amp; more {i}</p><br/>"}}}}))
            if item in missing:
                continue
            image_path = root / "images" / f"{item}.jpg"
            if item in corrupt:
                image_path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
            else:
                size = (40 + 4 * i, 60)
                pixels = rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(image_path)
        lines.append("2000,Men,Apparel,Topwear,,Blue,Summer,2012,Casual,No label")
        (root / "styles.csv").write_text("\n".join(lines) + "\n")
        return ids

    return write


@pytest.fixture(scope="session")
def metric_problem():
    """metric_problem(seed, n=400, c=9, *, decimals=None, unseen=(2, 5), missing=(7,)) ->
    (probs float32 [n, c], labels [n], seen_mask [c]): random sigmoid outputs with unseen classes
    and a seen class absent from validation; `decimals` rounds them, so scores tie within and
    across classes."""

    def make(seed, n=400, c=9, *, decimals=None, unseen=(2, 5), missing=(7,)):
        rng = np.random.default_rng(seed)
        present = np.setdiff1d(np.arange(c), missing)
        labels = rng.choice(present, n)
        probs = rng.random((n, c))
        probs[np.arange(n), labels] += rng.random(n)  # some signal, so AUCs are not all 0.5
        probs = np.clip(probs / 1.5, 0, 1).astype(np.float32)
        if decimals is not None:
            probs = np.round(probs, decimals).astype(np.float32)
        seen = np.ones(c, bool)
        seen[list(unseen)] = False
        return probs, labels, seen

    return make


@pytest.fixture(scope="session")
def sweep_with_dataset():
    """sweep_with_dataset(seed=0, trials=3, methods=("control", "e_mixup")) -> (SweepResult,
    EmbeddingDataset): Gaussian clusters of 6 classes, class 5 held out of every trial's
    training rows (its validation rows are "none"), and made-up member probabilities whose
    splits (train_idx, val_idx) point into the dataset, as a real sweep's do."""
    from embaug_jax.dataset import EmbeddingDataset
    from embaug_jax.train.result import SweepResult

    def make(seed=0, trials=3, methods=("control", "e_mixup")):
        rng = np.random.default_rng(seed)
        c, n, dim, num_train, num_val = 6, 600, 12, 100, 150
        labels = rng.integers(0, c, n).astype(np.int32)
        centres = rng.normal(0, 2.0, (c, dim))
        embeddings = (centres[labels] + rng.normal(0, 1.0, (n, dim))).astype(np.float32)
        dataset = EmbeddingDataset(embeddings, labels, [f"c{k}" for k in range(c)])
        train_idx, val_idx = [], []
        for _ in range(trials):
            order = rng.permutation(n)
            train = order[labels[order] != c - 1][:num_train]
            train_idx.append(train)
            val_idx.append(np.setdiff1d(order, train)[:num_val][rng.permutation(num_val)])
        train_idx, val_idx = np.stack(train_idx), np.stack(val_idx)
        val_labels = labels[val_idx]
        seen = np.stack([np.isin(np.arange(c), labels[t]) for t in train_idx])
        members, probs = [], []
        for k, method in enumerate(methods):
            for t in range(trials):
                members.append(dict(method=method, alpha=0.0 if method == "control" else 0.2,
                                    softness=0.0, trial=t, seed=0))
                logits = ((2.5 - 0.3 * k) * np.eye(c)[val_labels[t]] * seen[t]
                          + rng.normal(0, 1, (num_val, c)) - 1.5)
                probs.append(1 / (1 + np.exp(-logits)))
        m = len(members)
        result = SweepResult(
            members=members, eval_epochs=np.array([2, 4]),
            history={k: rng.random((m, 2)) for k in ("overall_accuracy", "none_accuracy",
                                                      "train_loss")},
            val_probs=np.stack(probs).astype(np.float32), val_labels=val_labels,
            seen_mask=seen, class_names=dataset.class_names, threshold=0.6,
            val_idx=val_idx, train_idx=train_idx)
        return result, dataset

    return make
