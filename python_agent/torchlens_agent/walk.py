"""One walker for nested containers of tensors (tuples, lists, dicts, namedtuples, dataclasses).

Every place that must find tensors inside arguments or outputs uses these functions.

Paths join positions and keys with '.': `0.1` is item 1 of item 0, `logits` a dict key. A
namedtuple is a tuple (positions, as ever); a dataclass instance (a model's output class such as
`@dataclass class Output: logits: Tensor`) is walked by its fields in definition order, named by
field: `logits`, `hidden.0`. A dataclass that is also a dict (HuggingFace's `ModelOutput`, an
OrderedDict subclass whose keys are its set fields) is walked as the dict it is.
"""

import copy
import dataclasses
from collections import OrderedDict
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch

from torch import Tensor  # noqa: E402  (a class, usable in annotations)

_CONTAINERS = (tuple, list, dict)


def dataclass_items(obj: Any) -> Optional[List[Tuple[str, Any]]]:
    """(field name, value) for each field of a dataclass instance, in definition order; None when
    obj is not a dataclass instance (or is a dict, which is walked by its items instead)."""
    fields = getattr(type(obj), "__dataclass_fields__", None)
    if fields is None or isinstance(obj, dict):
        return None
    return [(f.name, getattr(obj, f.name, None)) for f in dataclasses.fields(obj)]


def _is_walked(obj: Any) -> bool:
    """obj may hold tensors the walker reaches: a container or a dataclass instance."""
    return isinstance(obj, _CONTAINERS) or hasattr(type(obj), "__dataclass_fields__")


def iter_tensors(obj: Any, path: str = "") -> Iterator[Tuple[str, Tensor]]:
    """Yield (path, tensor) for every tensor inside obj; paths join positions and keys with '.'."""
    if isinstance(obj, Tensor):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            if isinstance(item, Tensor):
                yield (f"{path}.{i}" if path else str(i)), item
            elif _is_walked(item):
                yield from iter_tensors(item, f"{path}.{i}" if path else str(i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            sub = f"{path}.{key}" if path else str(key)
            yield from iter_tensors(item, sub)
    else:
        items = dataclass_items(obj)
        if items is not None:
            for name, item in items:
                yield from iter_tensors(item, f"{path}.{name}" if path else name)


def tensors_in_order(obj: Any) -> List[Tensor]:
    """Every tensor inside obj, in the order iter_tensors yields them (a model's outputs in return order)."""
    return [t for _, t in iter_tensors(obj)]


def _rebuild_dict(obj: dict, items: List[Tuple[Any, Any]]) -> dict:
    """A dict of obj's class holding `items`. A plain dict or OrderedDict is made anew; a subclass
    (a defaultdict, a `ModelOutput`, whose constructors take other arguments) is copied, keeping
    its other state, and its entries replaced (a dataclass's field attributes too)."""
    if type(obj) in (dict, OrderedDict):
        return type(obj)(items)
    try:
        new = copy.copy(obj)
    except Exception:  # noqa: BLE001 - a class copy cannot make: build it from the items as before
        return type(obj)(items)
    fields = getattr(type(obj), "__dataclass_fields__", None) or {}
    for key, value in items:
        new[key] = value
        if key in fields:
            object.__setattr__(new, key, value)
    return new


def _rebuild_dataclass(obj: Any, items: List[Tuple[str, Any]]) -> Any:
    """A shallow copy of a dataclass instance with its fields set to `items` (no __init__ or
    __post_init__ runs; frozen instances too)."""
    new = copy.copy(obj)
    for name, value in items:
        object.__setattr__(new, name, value)
    return new


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
        return _rebuild_dict(obj, [(k, map_tensors(v, fn)) for k, v in obj.items()])
    fields = dataclass_items(obj)
    if fields is not None:
        return _rebuild_dataclass(obj, [(name, map_tensors(v, fn)) for name, v in fields])
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
        return _rebuild_dict(obj, [(k, map_tensors_at(v, fn, f"{path}.{k}" if path else str(k)))
                                   for k, v in obj.items()])
    fields = dataclass_items(obj)
    if fields is not None:
        return _rebuild_dataclass(obj, [(name, map_tensors_at(v, fn, f"{path}.{name}" if path else name))
                                        for name, v in fields])
    return obj


def get_at(obj: Any, path: Optional[str]) -> Any:
    """The item at a path from iter_tensors (None or "" is obj itself)."""
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj[part] if part in obj else obj[int(part)]
        elif isinstance(obj, (tuple, list)):
            obj = obj[int(part)]
        elif dataclass_items(obj) is not None:
            obj = getattr(obj, part)
        else:
            obj = obj[int(part)]
    return obj
