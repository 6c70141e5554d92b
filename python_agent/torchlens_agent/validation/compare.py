"""Comparing arrays: a replayed or live value against the saved one, within the dtype's tolerance
(dtypes.py), and the exact comparisons the dependence check makes.
"""

from typing import Any, Dict, List

import numpy as np
from torch import Tensor

from ..capture.arrays import tensor_bytes
from ..dtypes import tolerance
from ..walk import tensors_in_order

def compare(got: np.ndarray, want: np.ndarray, dtype: str) -> Dict[str, Any]:
    """Whether two arrays agree for this dtype, with the largest error and where it is."""
    if got.shape != want.shape:
        return {"ok": False, "reason": f"shape {list(got.shape)} instead of {list(want.shape)}"}
    if got.dtype != want.dtype:
        return {"ok": False, "reason": f"dtype {got.dtype} instead of {want.dtype}"}
    if got.size == 0:
        return {"ok": True, "max_abs_err": 0.0}
    if want.dtype.kind in "biu":
        diff = np.asarray(got != want)
        n = int(np.count_nonzero(diff))
        if n:
            at = int(np.flatnonzero(diff.reshape(-1))[0])
            return {"ok": False, "reason": f"{n} of {got.size} values differ", "at": at, "max_abs_err": None}
        return {"ok": True, "max_abs_err": 0.0}
    rtol, atol = tolerance(dtype)
    got, want = got.reshape(-1), want.reshape(-1)  # 0-d arrays too: element assignment below needs an array
    g = got.astype(np.complex128 if want.dtype.kind == "c" else np.float64, copy=False)
    w = want.astype(g.dtype, copy=False)
    same_nan = np.isnan(g) & np.isnan(w)
    with np.errstate(invalid="ignore"):  # inf - inf: nan here, set right just below (attention masks)
        err = np.abs(g - w)
    err[same_nan] = 0.0
    both_inf = np.isinf(g) & np.isinf(w) & (g == w)
    err[both_inf] = 0.0
    with np.errstate(invalid="ignore"):
        bad = ~(err <= atol + rtol * np.abs(w))
    # an infinity on one side only is never within tolerance (rtol * inf would make it so)
    bad |= (np.isinf(g) | np.isinf(w)) & ~both_inf
    bad[same_nan | both_inf] = False
    flat = err.reshape(-1)
    finite = np.where(np.isnan(flat), np.inf, flat)
    at = int(np.argmax(finite))
    max_err = float(finite[at])
    if np.any(bad):
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        return {"ok": False, "reason": f"{int(np.count_nonzero(bad))} of {got.size} values outside tolerance (rtol {rtol}, atol {atol})",
                "at": first, "max_abs_err": max_err}
    return {"ok": True, "max_abs_err": max_err}


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit the same array (NaN equal to NaN): what a perturbation must break."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def any_changed(out: Any, reference: List[Tensor]) -> bool:
    """Some tensor of a call's output differs from the reference outputs of the same call."""
    now = tensors_in_order(out)
    return len(now) != len(reference) or any(
        not identical(tensor_bytes(a)[0], tensor_bytes(b)[0]) for a, b in zip(now, reference))
