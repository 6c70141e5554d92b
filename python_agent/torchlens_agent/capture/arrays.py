"""The bytes of a tensor as they travel: a C-order numpy array of a dtype numpy has (docs/wire.md,
`stored_dtype`), and the shape a pass records."""

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..dtypes import TRAVELS_AS, short_name

# The tensor methods every saved pass calls, taken before anything is wrapped: called through the
# wrappers they would only pass through them (the session is paused), at a microsecond each.
_DETACH = Tensor.detach
_IS_COMPLEX = Tensor.is_complex
_CONTIGUOUS = Tensor.contiguous
_NUMPY = Tensor.numpy


def shape_of(t: Tensor) -> List[int]:
    """The shape a pass records: a nested tensor (torch's fast paths with padding masks make them)
    has none of its own and is recorded as its zero-padded form, as tensor_bytes stores it."""
    try:
        return list(t.shape)
    except RuntimeError:
        if not t.is_nested:
            raise
        return list(_padded(t).shape)


def _padded(t: Tensor) -> Tensor:
    """A nested tensor as one zero-padded tensor (torch 1.13 has only the method)."""
    nested = getattr(torch, "nested", None)
    to_padded = getattr(nested, "to_padded_tensor", None)
    return to_padded(t, 0.0) if to_padded is not None else t.to_padded_tensor(0.0)


def tensor_bytes(t: Tensor) -> Tuple[np.ndarray, Optional[str]]:
    """The C-order numpy array to store for t, and a note when it had to be converted."""
    note = None
    d = _DETACH(t) if t.requires_grad else t
    if d.is_nested:
        d = _padded(d)
        note = "nested tensor stored zero-padded"
    if d.layout != torch.strided:
        d = d.to_dense()
        note = f"{short_name(t.layout)} tensor stored dense"
    if d.is_quantized:
        d = d.int_repr()
        note = "quantized tensor stored as its integer representation"
    if d.dtype in TRAVELS_AS:
        d = d.to(TRAVELS_AS[d.dtype])
    if d.device.type != "cpu":
        d = d.cpu()
    if _IS_COMPLEX(d) and hasattr(d, "resolve_conj"):  # only complex tensors carry conj/neg bits
        d = d.resolve_conj().resolve_neg()
    arr = _NUMPY(_CONTIGUOUS(d))
    return arr, note


def is_own_copy(arr: np.ndarray, t: Tensor) -> bool:
    """arr is memory that tensor_bytes made (a conversion, a copy off the GPU), which nothing in the
    model can change: it may be sent without another copy."""
    try:
        return arr.ctypes.data != t.data_ptr()
    except RuntimeError:  # tensors without plain storage (sparse): copy to be safe
        return False

