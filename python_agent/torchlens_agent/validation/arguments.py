"""A call's arguments for a replay: read one by the position a record names, put others in its
place, copies an in-place replay may write to."""

from typing import Any, Dict, Tuple

from torch import Tensor

from ..walk import get_at, map_tensors_at

def fresh(t: Tensor) -> Tensor:
    """A copy an in-place replay may write to (quantized tensors cannot be cloned; ops on them
    are not in place)."""
    return t if t.is_quantized or t.is_nested else t.clone()


def at_position(args: tuple, kwargs: Dict[str, Any], pos: str) -> Tensor:
    """The argument at a record's parent position ("0", "1.2", "k:weight")."""
    if pos.startswith("k:"):
        rest = pos[2:]
        key, _, sub = rest.partition(".")
        return get_at(kwargs[key], sub)
    return get_at(args, pos)


def substitute(args: tuple, kwargs: Dict[str, Any], replacements: Dict[str, Tensor]) -> Tuple[tuple, Dict[str, Any]]:
    """The arguments with the tensors at the given positions replaced."""
    positional = {k: v for k, v in replacements.items() if not k.startswith("k:")}
    keyword = {k[2:]: v for k, v in replacements.items() if k.startswith("k:")}
    new_args = map_tensors_at(args, lambda path, t: positional.get(path, t))
    new_kwargs = map_tensors_at(kwargs, lambda path, t: keyword.get(path, t))
    return new_args, new_kwargs
