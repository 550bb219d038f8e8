"""PyTorch checkpoint files (`.pth`, `.pt`, `.bin`) read as tensors only, never as code.

A PyTorch checkpoint is a pickle, and unpickling can run any code it names; these readers go
through `torch.load(weights_only=True)`, which builds tensors and plain containers and refuses
everything else. torch is needed only here (`pip install 'embaug_jax[convert]'`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embaug_jax.embed.weights import load_safetensors
from embaug_jax.util import UserError


def torch_load_weights(path: str | Path) -> Any:
    """`torch.load(weights_only=True)`: tensors only, never code from a pickle.

    Raises:
      UserError: the file holds other objects (or is no checkpoint at all). The message names the
        file and never repeats torch's advice to retry with weights_only=False, which would run
        whatever code the pickle holds.
    """
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip), EOFError (truncated) ...
        kind = ("it holds Python objects other than tensors, which are not loaded (unpickling "
                "them could run code)" if "weights_only" in str(e) or
                "Unpickl" in type(e).__name__ else f"not a readable PyTorch checkpoint "
                f"({type(e).__name__})")
        raise UserError(f"{path}: refused: {kind}. Use a safetensors copy of the weights "
                        "(model.safetensors), or convert the checkpoint where you trust it."
                        ) from e


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A `.pth`/`.pt`/`.bin` (torch.load with weights_only=True) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)[0]
    try:
        import torch  # noqa: F401  (only to say how to install it)
    except ImportError as e:  # pragma: no cover - torch is a test/convert extra
        raise ImportError("reading .pth checkpoints needs torch (pip install "
                          "'embaug_jax[convert]'), or convert them to safetensors") from e
    state = torch_load_weights(path)
    for key in ("state_dict", "model", "model_state_dict"):  # common training wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")  # DataParallel
        out[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    return out
