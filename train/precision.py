"""The fastest correct training precision for the hardware the run is on (``mixed_precision="auto"``).

bf16 autocast is the fastest correct path where the hardware computes bf16 natively: CUDA GPUs that support it, and
CPUs with AVX-512 bf16 or AMX tiles. Elsewhere bf16 is emulated and much slower than fp32 (on a 2-core AVX2 EPYC:
7x slower per CRW step, ``bench/train_step.py``), so fp32 it is. fp16 is never chosen automatically: it needs loss
scaling, and bf16 keeps fp32's range.
"""

from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def training_device() -> torch.device:
    """The device accelerate will train on: the first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_mixed_precision(requested: str, device: torch.device | None = None) -> tuple[str, str]:
    """``(precision, why)``: ``requested`` unless it is ``"auto"``, which becomes ``"bf16"`` on hardware with native
    bf16 and ``"no"`` (fp32) elsewhere."""
    if requested != "auto":
        return requested, "as requested"
    device = device or training_device()
    if native_bf16(device):
        return "bf16", f"auto: {device.type} computes bf16 natively"
    return "no", f"auto: {device.type} has no native bf16, so fp32 (emulated bf16 is slower)"
