"""Summaries of a call's non-tensor arguments: the record's `args` (docs/wire.md), and the repr of
an output that is not a tensor."""

import math
from typing import Any, Dict

import torch
from torch import Tensor, nn

from ..dtypes import short_name

def summarize(value: Any, limit: int, depth: int = 0) -> Any:
    """A JSON-friendly, short stand-in for a non-tensor argument."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, Tensor):
        return {"tensor": list(value.shape)}
    if isinstance(value, slice):
        parts = ["" if v is None else str(summarize(v, limit, depth + 1)) for v in (value.start, value.stop)]
        return ":".join(parts) + ("" if value.step is None else f":{value.step}")
    if value is Ellipsis:
        return "..."
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return short_name(value)
    if isinstance(value, (tuple, list)) and depth < 3:
        if len(value) > 16:
            return [summarize(v, limit, depth + 1) for v in value[:16]] + [f"…{len(value) - 16} more"]
        return [summarize(v, limit, depth + 1) for v in value]
    text = repr(value)
    if isinstance(value, nn.Module):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def summarize_args(args: tuple, kwargs: Dict[str, Any], limit: int) -> Dict[str, Any]:
    """A record's `args`: the call's non-tensor arguments by position ("0", "k:dim"), summarised."""
    out: Dict[str, Any] = {}
    for i, a in enumerate(args):
        if not isinstance(a, Tensor):
            out[str(i)] = summarize(a, limit)
    for k, v in kwargs.items():
        if not isinstance(v, Tensor):
            out["k:" + k] = summarize(v, limit)
    return out

