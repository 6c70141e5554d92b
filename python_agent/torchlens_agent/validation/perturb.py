"""Perturbations for the dependence check: other values for a parent, of its shape, dtype and
device, that its child must notice."""

from typing import List, Optional

import torch
from torch import Tensor

def perturbed(t: Tensor, gen: torch.Generator) -> Optional[Tensor]:
    """A tensor of the same shape, dtype and device whose values differ everywhere we can make them."""
    if t.is_nested:
        return None
    if t.numel() == 0:
        return None
    if t.is_quantized:
        if t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return None
        moved = t.dequantize() + torch.randn(t.shape, generator=gen) * (float(t.dequantize().abs().max()) + 1.0)
        return torch.quantize_per_tensor(moved, t.q_scale(), t.q_zero_point(), t.dtype)
    if t.dtype == torch.bool:
        return ~t
    if t.is_floating_point() or t.is_complex():
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)
        wide = torch.complex128 if t.is_complex() else torch.float64
        base = t.detach().to(wide)
        finite = torch.isfinite(base)
        # NaN and ±inf stay NaN and inf whatever is added: those entries become finite values, so
        # that the child can change (log of negatives in a loop gives an all-NaN parent)
        magnitude = base.abs()[finite]
        scale = (float(magnitude.max()) if magnitude.numel() else 0.0) + 1.0
        noise = noise * (1 + 1j) if t.is_complex() else noise
        moved = torch.where(finite, base + noise * scale, noise * scale)
        return moved.to(t.dtype)
    # Integers move up by a random 1..997 each: every value changes, and so do sums, floor
    # divisions and remainders of them (nearly always; a permutation would leave sums alone). An
    # index pushed out of range makes the op raise, which counts as a change.
    step = torch.randint(1, 998, t.shape, generator=gen).to(device=t.device, dtype=t.dtype)
    return t.detach() + step


def more_perturbations(t: Tensor, gen: torch.Generator) -> List[Tensor]:
    """Further candidates for a float parent whose first perturbation changed nothing: fresh
    values of both signs, then positive ones, then small ones (a saturated op moves near zero)."""
    if t.is_nested or t.numel() == 0 or t.is_quantized:
        return []
    fresh = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)
    return [(fresh * 3).to(t.dtype), (fresh.abs() * 3 + 0.5).to(t.dtype), (fresh * 0.1).to(t.dtype)]
