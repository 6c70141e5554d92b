"""One walker for nested containers of tensors (tuples, lists, dicts, namedtuples).

Every place that must find tensors inside arguments or outputs uses these two functions.
"""

from typing import Any, Callable, Iterator, Optional, Tuple

import torch

from torch import Tensor  # noqa: E402  (a class, usable in annotations)


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


def map_tensors_at(obj: Any, fn: Callable[[str, Tensor], Any], path: str = "") -> Any:
    """Like map_tensors, but fn also gets each tensor's path (the paths iter_tensors yields)."""
    if isinstance(obj, Tensor):
        return fn(path, obj)
    if isinstance(obj, tuple):
        items = [map_tensors_at(x, fn, f"{path}.{i}" if path else str(i)) for i, x in enumerate(obj)]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [map_tensors_at(x, fn, f"{path}.{i}" if path else str(i)) for i, x in enumerate(obj)]
    if isinstance(obj, dict):
        return type(obj)((k, map_tensors_at(v, fn, f"{path}.{k}" if path else str(k))) for k, v in obj.items())
    return obj


def get_at(obj: Any, path: Optional[str]) -> Any:
    """The item at a path from iter_tensors (None or "" is obj itself)."""
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj[part] if part in obj else obj[int(part)]
        else:
            obj = obj[int(part)]
    return obj
