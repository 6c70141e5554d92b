"""Dtypes, in one table: the name each has on the wire, what its bytes travel as where numpy has no
such dtype, and the tolerance replay compares it with.
"""

from typing import Any, Dict, Optional, Tuple

import torch

# (rtol, atol) for float8 and other narrow floats, and for any float dtype not in the table
_NARROW = (1e-2, 1e-2)

# name -> (the dtype its bytes travel as, None where numpy has it; (rtol, atol) for replay).
# Tolerances: |replay - saved| <= atol + rtol * |saved|. Replaying one op on the same inputs is
# usually bit-exact on CPU; the slack covers kernels that reorder sums (threads, GPUs). Integer and
# bool arrays must be equal, whatever the table says.
_TABLE: Dict[str, Tuple[Optional[str], Tuple[float, float]]] = {
    "float64": (None, (1e-7, 1e-9)),
    "float32": (None, (1e-4, 1e-5)),
    "float16": (None, (1e-2, 1e-3)),
    "bfloat16": ("float32", (2e-2, 1e-2)),
    "complex128": (None, (1e-7, 1e-9)),
    "complex64": (None, (1e-4, 1e-5)),
    "complex32": ("complex64", (1e-2, 1e-3)),
    "float8_e4m3fn": ("float32", _NARROW),
    "float8_e5m2": ("float32", _NARROW),
    "float8_e4m3fnuz": ("float32", _NARROW),
    "float8_e5m2fnuz": ("float32", _NARROW),
    "float8_e8m0fnu": ("float32", _NARROW),
}

# The dtypes of this torch whose bytes travel converted (docs/wire.md, `stored_dtype`).
TRAVELS_AS: Dict[torch.dtype, torch.dtype] = {
    getattr(torch, name): getattr(torch, travels) for name, (travels, _) in _TABLE.items()
    if travels is not None and hasattr(torch, name)
}


def tolerance(name: str) -> Tuple[float, float]:
    """(rtol, atol) for comparing floats of the dtype named `name` (a wire dtype name)."""
    entry = _TABLE.get(name)
    return entry[1] if entry is not None else _NARROW


def short_name(value: Any) -> str:
    """torch's name for a dtype, layout, device or memory format, without `torch.`."""
    return str(value).replace("torch.", "")


_NAMES: Dict[torch.dtype, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    """The dtype's name on the wire: `float32`, `bfloat16`, `quint8`."""
    name = _NAMES.get(dtype)
    if name is None:
        name = _NAMES[dtype] = short_name(dtype)
    return name
