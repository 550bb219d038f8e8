"""The `embaug convert` command: pretrained checkpoints -> safetensors that load without the
framework they were trained in.

    embaug convert efficientnet SRC DST [--from keras|pytorch|lite|timm|timm_tf] [--variant b4]

The conversion itself is `efficientnet.convert.convert_file`; it reads Keras files
(`embed.keras_files`), PyTorch pickles with `weights_only=True` (`embed.torch_files`) and
safetensors. BERT checkpoints need no conversion: `TextEmbedder.from_pretrained` reads a
Hugging Face folder directly.
"""

from __future__ import annotations

import argparse
import sys

from embaug_jax.embed.efficientnet.convert import convert_file
from embaug_jax.embed.efficientnet.model import VARIANTS
from embaug_jax.embed.efficientnet.weights import ORIGINS


def main(argv: list[str] | None = None) -> int:
    """`embaug convert efficientnet SRC DST [--from ...] [--variant ...]`.

    Args:
      argv: the program name then the arguments, as `sys.argv` (the CLI dispatcher passes
        ["embaug convert", ...]).
    Returns:
      The exit status: 0 on success, 2 on a bad checkpoint, file or argument.
    """
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=argv[0] if argv else "embaug convert",
        description="Convert pretrained checkpoints to safetensors that load without the "
                    "original framework.")
    sub = parser.add_subparsers(dest="model", required=True)
    p = sub.add_parser("efficientnet", help="Keras / PyTorch / timm EfficientNet B0-B7, Lite0-4")
    p.add_argument("src", help=".keras / .h5 / .pth / .bin / .safetensors checkpoint")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--from", dest="origin", choices=ORIGINS, default=None,
                   help="where the weights come from (default: guessed from the file); "
                        "timm_tf = timm's tf_efficientnet_* ports")
    p.add_argument("--variant", default=None,
                   help=f"one of {', '.join(VARIANTS)} (default: inferred from shapes)")
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as e:  # argparse exits on --help (0) and on bad arguments (2)
        return int(e.code or 0)
    try:
        info = convert_file(args.src, args.dst, origin=args.origin, variant=args.variant)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"embaug convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: EfficientNet-{info.variant} ({info.origin}, padding={info.padding}, "
          f"bn_epsilon={info.bn_epsilon:g}, mean={[round(m, 3) for m in info.mean]}, "
          f"std={[round(s, 3) for s in info.std]})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
