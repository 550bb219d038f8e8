"""EfficientNet checkpoint converters (embed/efficientnet/convert.py) and the `embaug convert`
command (embed/convert.py): strict errors, timm naming, Keras normalisation, the command line.

The timm checkpoints are built here from timm's module structure (timm does not install):
stage 0 blocks are DepthwiseSeparableConv (conv_dw, bn1, se, conv_pw, bn2), later ones
InvertedResidual (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3); values come from an
efficientnet-pytorch model, which is then the oracle for the converted features.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.numpy import save_file

from embaug_jax import cli
from embaug_jax.embed.convert import main as convert_main
from embaug_jax.embed.efficientnet import convert
from embaug_jax.embed.efficientnet.embedder import ImageEmbedder
from embaug_jax.embed.efficientnet.model import EfficientNet, architecture
from embaug_jax.embed.efficientnet.weights import IMAGENET_MEAN, IMAGENET_STD, WeightsInfo
from embaug_jax.embed.weights import load_safetensors

# Stage layout of EfficientNet-B0 (repeats, expand ratio) and timm's per-variant depth scaling.
_B0_STAGES = ((1, 1), (2, 6), (2, 6), (3, 6), (3, 6), (4, 6), (1, 6))
_DEPTH = {"b0": 1.0, "b4": 1.8}


def timm_module_names(variant: str) -> list[tuple[str, str, int]]:
    """[(timm module, efficientnet-pytorch module, stage)] for every conv / bn / se of a model."""
    names = [("conv_stem", "_conv_stem", -1), ("bn1", "_bn0", -1)]
    flat = 0
    for s, (repeats, expand) in enumerate(_B0_STAGES):
        for b in range(math.ceil(_DEPTH[variant] * repeats)):
            t, p = f"blocks.{s}.{b}", f"_blocks.{flat}"
            if expand == 1:  # DepthwiseSeparableConv
                names += [(f"{t}.conv_dw", f"{p}._depthwise_conv", s), (f"{t}.bn1", f"{p}._bn1", s),
                          (f"{t}.se.conv_reduce", f"{p}._se_reduce", s),
                          (f"{t}.se.conv_expand", f"{p}._se_expand", s),
                          (f"{t}.conv_pw", f"{p}._project_conv", s), (f"{t}.bn2", f"{p}._bn2", s)]
            else:  # InvertedResidual
                names += [(f"{t}.conv_pw", f"{p}._expand_conv", s), (f"{t}.bn1", f"{p}._bn0", s),
                          (f"{t}.conv_dw", f"{p}._depthwise_conv", s), (f"{t}.bn2", f"{p}._bn1", s),
                          (f"{t}.se.conv_reduce", f"{p}._se_reduce", s),
                          (f"{t}.se.conv_expand", f"{p}._se_expand", s),
                          (f"{t}.conv_pwl", f"{p}._project_conv", s), (f"{t}.bn3", f"{p}._bn2", s)]
            flat += 1
    names += [("conv_head", "_conv_head", -1), ("bn2", "_bn1", -1), ("classifier", "_fc", -1)]
    return names


def timm_state_dict(reference: torch.nn.Module, variant: str) -> dict[str, np.ndarray]:
    """The reference model's tensors under timm's names (classifier and counters included)."""
    ref = {k: v.numpy() for k, v in reference.state_dict().items()}
    out = {}
    for timm_mod, ref_mod, _ in timm_module_names(variant):
        for key, value in ref.items():
            if key.startswith(ref_mod + "."):
                out[timm_mod + key[len(ref_mod):]] = value
    assert len(out) == len(ref), "every reference tensor has a timm name"
    return out


def _zero_cost(shape):
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * len(shape))


def test_timm_b4_table_has_timm_names_and_shapes():
    from efficientnet_pytorch import EfficientNet as Ref

    with torch.device("meta"):
        ref = Ref.from_name("efficientnet-b4")
    shapes = {}
    for timm_mod, ref_mod, _ in timm_module_names("b4"):
        for key, value in ref.state_dict().items():
            if key.startswith(ref_mod + "."):
                shapes[timm_mod + key[len(ref_mod):]] = tuple(value.shape)
    # Facts of timm's efficientnet_b4 / tf_efficientnet_b4 state dicts.
    known = {
        "conv_stem.weight": (48, 3, 3, 3), "bn1.running_var": (48,),
        "blocks.0.0.conv_dw.weight": (48, 1, 3, 3),
        "blocks.0.0.se.conv_reduce.weight": (12, 48, 1, 1),
        "blocks.0.0.conv_pw.weight": (24, 48, 1, 1),
        "blocks.0.1.conv_dw.weight": (24, 1, 3, 3),
        "blocks.1.0.conv_pw.weight": (144, 24, 1, 1),
        "blocks.1.0.se.conv_expand.weight": (144, 6, 1, 1),
        "blocks.1.0.conv_pwl.weight": (32, 144, 1, 1), "blocks.1.0.bn3.weight": (32,),
        "blocks.2.0.conv_dw.weight": (192, 1, 5, 5),
        "blocks.5.7.conv_pwl.weight": (272, 1632, 1, 1),
        "blocks.6.1.conv_pw.weight": (2688, 448, 1, 1),
        "conv_head.weight": (1792, 448, 1, 1), "bn2.weight": (1792,),
        "classifier.weight": (1000, 1792),
    }
    for key, shape in known.items():
        assert shapes[key] == shape, key
    stage_sizes = [len({k.split(".")[2] for k in shapes if k.startswith(f"blocks.{s}.")})
                   for s in range(7)]
    assert stage_sizes == [2, 4, 4, 6, 6, 8, 2]
    # The converter's table covers exactly these names (classifier and counters aside).
    flat, info = convert.convert_timm({k: _zero_cost(v) for k, v in shapes.items()},
                                      tf_ported=True)
    assert info.variant == "b4"
    used = {src for src, _ in convert.timm_table(architecture("b4")).values()}
    assert used == {k for k in shapes
                    if not k.endswith("num_batches_tracked") and not k.startswith("classifier")}


def _torch_features(model, x_nhwc):
    with torch.no_grad():
        y = model.extract_features(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))
    return y.mean((2, 3)).numpy()


def _flax_features(path, x_nhwc):
    flat, meta = load_safetensors(path)
    info = WeightsInfo.from_metadata(meta)
    model = EfficientNet(architecture(info.variant), padding=info.padding,
                           bn_epsilon=info.bn_epsilon)
    variables = traverse_util.unflatten_dict(flat, sep="/")
    return np.asarray(jax.jit(model.apply)(variables, x_nhwc)), info


@pytest.fixture(scope="module")
def reference_b0():
    from efficientnet_pytorch import EfficientNet as Ref

    torch.manual_seed(0)
    # Static TF padding computed for the 72 px inputs below (the default is for 224 px).
    model = Ref.from_name("efficientnet-b0", image_size=72).eval()
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():  # random affine, running stats calibrated as training leaves them
        for m in bns:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.momentum = 1.0
            m.train()
        model(torch.randn(2, 3, 72, 72, generator=g))
        for m in bns:
            m.eval()
    return model


# 72 px: feature maps of 36, 18, 9 (odd: TF padding is asymmetric there), 5 and 3.
_X = np.random.default_rng(0).normal(size=(2, 72, 72, 3)).astype(np.float32)


@pytest.mark.parametrize("flavour", ["timm_tf", "timm"])
def test_timm_checkpoint_matches_reference(reference_b0, flavour, tmp_path, fast_compile):
    import copy

    from efficientnet_pytorch.utils import Conv2dStaticSamePadding

    ref = reference_b0
    if flavour == "timm":
        # timm's own efficientnet_b0: symmetric k // 2 padding and PyTorch's epsilon 1e-5.
        ref = copy.deepcopy(reference_b0)
        for m in ref.modules():
            if isinstance(m, Conv2dStaticSamePadding) and m.kernel_size[0] > 1:
                m.static_padding = torch.nn.ZeroPad2d(m.kernel_size[0] // 2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-5
    src = tmp_path / f"{flavour}_efficientnet_b0.safetensors"
    save_file(timm_state_dict(ref, "b0"), str(src))
    assert convert.guess_origin(src) == flavour
    dst = tmp_path / "out.safetensors"
    info = convert.convert_file(src, dst, origin=flavour)
    assert (info.padding, info.bn_epsilon) == (
        ("tf", 1e-3) if flavour == "timm_tf" else ("symmetric", 1e-5))
    out, _ = _flax_features(dst, _X)
    ref_out = _torch_features(ref, _X)
    assert np.abs(ref_out[0] - ref_out[1]).max() > 0.05 * np.abs(ref_out).max()
    assert np.max(np.abs(out - ref_out)) <= 1e-4 * np.max(np.abs(ref_out))


def test_strict_errors_name_the_leaf(reference_b0):
    state = {k: v.numpy() for k, v in reference_b0.state_dict().items()}
    missing = dict(state)
    del missing["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match=r"_blocks\.3\._bn1\.running_var.*block2_0/dw_bn/var"):
        convert.convert_pytorch(missing, variant="b0")
    extra = dict(state, **{"_blocks.3._extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected.*\n.*_blocks\.3\._extra\.weight"):
        convert.convert_pytorch(extra, variant="b0")
    misshapen = dict(state, **{"_blocks.3._bn1.weight": np.zeros(7, np.float32)})
    with pytest.raises(ValueError, match=r"params/block2_0/dw_bn/scale: expected \(144,\), "
                                         r"got \(7,\)"):
        convert.convert_pytorch(misshapen, variant="b0")
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        convert.convert_pytorch(state, variant="b1")  # B1 has more blocks
    with pytest.raises(ValueError, match="conv_stem"):
        convert.convert_timm(state, tf_ported=True)
    with pytest.raises(ValueError, match="unknown EfficientNet variant"):
        convert.convert_pytorch(state, variant="b12")


def test_cli_round_trip(reference_b0, tmp_path, capsys, fast_compile):
    src = tmp_path / "b0.pth"
    torch.save(reference_b0.state_dict(), src)
    dst = tmp_path / "b0.safetensors"
    assert cli.main(["embaug", "convert", "efficientnet", str(src), str(dst)]) == 0
    assert "EfficientNet-b0" in capsys.readouterr().out
    out, info = _flax_features(dst, _X)
    assert (info.origin, info.variant, info.padding) == ("pytorch", "b0", "tf")
    np.testing.assert_allclose(info.mean, IMAGENET_MEAN)
    ref_out = _torch_features(reference_b0, _X)
    assert np.max(np.abs(out - ref_out)) <= 1e-4 * np.max(np.abs(ref_out))
    # The converted file needs neither torch nor the source: the embedder reads its metadata.
    embedder = ImageEmbedder.from_pretrained(dst, variant="b0", batch_size=1)
    assert embedder.info == info
    # A safetensors copy of the same state dict converts to the same file contents.
    st = tmp_path / "b0_state.safetensors"
    save_file({k: v.numpy() for k, v in reference_b0.state_dict().items()}, str(st))
    assert convert_main(["embaug convert", "efficientnet", str(st), str(tmp_path / "b.st")]) == 0
    a, b = load_safetensors(dst)[0], load_safetensors(tmp_path / "b.st")[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_cli_errors(tmp_path, capsys):
    assert convert_main(["embaug convert", "efficientnet", str(tmp_path / "nope.pth"),
                         str(tmp_path / "o.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert convert_main(["embaug convert", "efficientnet", str(bad), str(tmp_path / "o.st")]) == 2
    assert "neither a .keras archive nor an HDF5 file" in capsys.readouterr().err
    assert not (tmp_path / "o.st").exists()  # nothing half-written
    assert convert_main(["embaug convert", "efficientnet", "a", "b", "--from", "caffe"]) == 2
    assert convert_main(["embaug convert", "--help"]) == 0


def test_keras_imagenet_normalisation_without_config():
    """Keras's ImageNet files store std (not std^2) as the Normalization variance and add a
    Rescaling(1 / sqrt(std)) layer; a weights-only file must still give (x - mean) / std."""
    std = np.array([0.229, 0.224, 0.225])
    weights = {"normalization/mean": np.array([0.485, 0.456, 0.406]),
               "normalization/variance": std}
    mean255, std255 = convert._keras_normalisation(weights, {"config": None})
    np.testing.assert_allclose(mean255, IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(std255, IMAGENET_STD, rtol=1e-6)
    weights["normalization/variance"] = std ** 2  # a model whose layer holds the true variance
    np.testing.assert_allclose(convert._keras_normalisation(weights, {"config": None})[1],
                               IMAGENET_STD, rtol=1e-6)
