"""One walker for nested containers of tensors (tuples, lists, dicts, namedtuples).

Every place that must find tensors inside arguments or outputs uses these two functions.
"""

from typing import Any, Callable, Iterator, Tuple

import torch

Tensor = torch.Tensor


def iter_tensors(obj: Any, path: str = "") -> Iterator[Tuple[str, Tensor]]:
    """Yield (path, tensor) for every tensor inside obj; paths join positions and keys with '.'."""
    if isinstance(obj, Tensor):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            if isinstance(item, Tensor):
                yield (f"{path}.{i}" if path else str(i)), item
            elif isinstance(item, (tuple, list, dict)):
                yield from iter_tensors(item, f"{path}.{i}" if path else str(i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            sub = f"{path}.{key}" if path else str(key)
            yield from iter_tensors(item, sub)


def map_tensors(obj: Any, fn: Callable[[Tensor], Any]) -> Any:
    """Return a copy of obj's container structure with fn applied to each tensor."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        items = [map_tensors(x, fn) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [map_tensors(x, fn) for x in obj]
    if isinstance(obj, dict):
        return type(obj)((k, map_tensors(v, fn)) for k, v in obj.items())
    return obj
