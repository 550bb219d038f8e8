"""The public API: `import embaug_jax as ea` names what a notebook needs, lazily."""

import subprocess
import sys
from pathlib import Path

import numpy as np

import embaug_jax as ea


def test_every_public_name_is_the_defining_modules_object():
    import importlib

    assert 10 <= len(ea.__all__) <= 20
    for name in ea.__all__:
        module = importlib.import_module(ea._EXPORTS[name])
        assert getattr(ea, name) is getattr(module, name), name
    assert set(ea.__all__) <= set(dir(ea))


def test_unknown_names_are_attribute_errors():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'METHODS'"):
        ea.METHODS  # reachable from embaug_jax.augment, not advertised


def test_import_loads_no_jax():
    """`import embaug_jax` and the command line's dispatcher stay instant: JAX loads on use."""
    code = ("import sys, embaug_jax, embaug_jax.cli; "
            "assert 'jax' not in sys.modules, 'jax imported'; "
            "embaug_jax.soften_labels; assert 'jax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parent.parent)  # this checkout's package


def test_a_notebook_round_trip(tmp_path):
    """Augment, save, load: the top-level names work together as documented."""
    import jax

    ea.save_embeddings(tmp_path / "ds", np.eye(4, 6, dtype=np.float32), np.array([0, 1, 0, 1]),
                       ["a", "b"])
    loaded = ea.load_embeddings(tmp_path / "ds")
    x, y = ea.e_mixup(jax.random.key(0), loaded.embeddings, loaded.labels, 0.2, num_classes=2)
    assert x.shape == (2, 6) and y.shape == (2, 2)
    np.testing.assert_allclose(np.asarray(y).sum(1), 1.0, rtol=1e-6)
    xt, yt, w = ea.augment_batch(jax.random.key(0), loaded.embeddings, loaded.labels,
                                 ea.method_params("e_mixup", 0.2), num_classes=2)
    np.testing.assert_allclose(np.asarray(xt)[:2], np.asarray(x), rtol=1e-6)
    assert isinstance(ea.method_params("control"), ea.MethodParams)
