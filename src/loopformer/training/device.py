"""Where training runs: device choice, autocast on that device, batches moved there."""

from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. Asking for a device this machine lacks is an error."""
    if name not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {name!r}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ValueError("--device cuda: torch sees no CUDA device here (torch "
                         f"{torch.__version__}); use --device cpu or install a CUDA build")
    if name == "mps" and not mps:
        raise ValueError("--device mps: the MPS backend is not available on this machine; "
                         "use --device cpu")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device's own type (a no-op context when bf16 is off)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def has_fused_adamw(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda")

