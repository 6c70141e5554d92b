"""Stale references: torch functions the model holds from before the wrappers were installed.

The wrappers are installed after the model file is imported and the model built (TorchScript
compiled then must meet torch as it is). Whatever took a torch function by value before that —
`self.act = F.gelu` in `__init__`, a registry `ACTS = {"gelu": F.gelu}` built at import, a default
argument `def f(x, act=torch.sigmoid)`, a `functools.partial(torch.clamp, min=0)`, a closure over
`torch.tanh` — still holds the original and would run unseen. `rebind_references` walks what the
model can reach and points every such reference at its wrapper; `Wrappers.restore()` undoes it.

Why a walk and not a `TorchFunctionMode` (which sees every call however it was reached): a mode
costs every torch call, tensor metadata included (`x.shape`, `x.size()`), 1–2 µs more each,
measured in docs/capture.md; the walk runs once per run. What the walk cannot reach, validate's
completeness check (validation/completeness.py) finds and names.

What is walked: the globals of the given modules (the model file, what it imported from its own
folder, and the modules defining the model's module classes), the model's modules' instance
attributes and their classes' attributes, and inside those, recursively: dicts, lists, tuples,
`functools.partial`, functions (defaults, keyword defaults, closure cells), static methods and
plain objects' attributes. Tensors, modules' parameters and buffers and other modules are not
descended into (the modules are walked on their own).
"""

import functools
import types
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

_MAX_DEPTH = 6
_MAX_OBJECTS = 200_000  # a bound on the walk's time on huge object graphs
_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, torch.dtype, torch.device,
           types.ModuleType)


class ReferenceWalk:
    """One walk: `lookup(obj)` gives the wrapper for a wrapped original (or None); `undo` collects
    a function per replacement that puts the original back."""

    def __init__(self, lookup: Callable[[Any], Optional[Callable]], undo: List[Callable[[], None]]):
        self.lookup = lookup
        self.undo = undo
        self.seen: set = set()
        self.replaced = 0

    # -- entry points ---------------------------------------------------------------------------

    def module_globals(self, module: types.ModuleType) -> None:
        self._namespace(vars(module), owner=module)

    def model(self, model: nn.Module) -> None:
        classes: Dict[int, type] = {}
        for mod in model.modules():
            self._namespace(vars(mod), owner=mod, skip=("_modules", "_parameters", "_buffers"))
            for cls in type(mod).__mro__:
                if cls.__module__.split(".")[0] != "torch" and cls is not object:
                    classes.setdefault(id(cls), cls)
        for cls in classes.values():
            self._class(cls)

    # -- the walk ---------------------------------------------------------------------------------

    def _first_visit(self, obj: Any) -> bool:
        key = id(obj)
        if key in self.seen or len(self.seen) > _MAX_OBJECTS:
            return False
        self.seen.add(key)
        return True

    def _replacement(self, value: Any, depth: int) -> Any:
        """The value to store instead of `value` (a wrapper, or a rebuilt tuple), or None."""
        if isinstance(value, _LEAVES) or isinstance(value, nn.Module) or getattr(value, "_tl_wrapper", False):
            return None  # a wrapper's own closure holds its original: never rewritten
        if callable(value):
            wrapper = self.lookup(value)
            if wrapper is not None:
                return wrapper
        if depth >= _MAX_DEPTH:
            return None
        if isinstance(value, tuple):
            if not self._first_visit(value):
                return None
            items = list(value)
            changed = False
            for i, item in enumerate(items):
                new = self._replacement(item, depth + 1)
                if new is not None:
                    items[i] = new
                    changed = True
            if not changed:
                return None
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        self._descend(value, depth)
        return None

    def _descend(self, value: Any, depth: int) -> None:
        """Replace references inside a mutable holder, in place."""
        if not self._first_visit(value):
            return
        if isinstance(value, dict):
            self._dict(value, depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                new = self._replacement(item, depth + 1)
                if new is not None:
                    self._swap_item(value, i, new)
        elif isinstance(value, functools.partial):
            self._partial(value, depth)
        elif isinstance(value, types.FunctionType):
            self._function(value, depth)
        elif isinstance(value, types.MethodType):
            self._descend(value.__func__, depth)
        elif isinstance(value, type):
            self._class_attributes(value)
        elif hasattr(value, "__dict__") and type(value).__module__.split(".")[0] not in ("torch", "builtins"):
            try:
                namespace = vars(value)
            except TypeError:
                return
            if isinstance(namespace, dict):
                self._namespace(namespace, owner=value, depth=depth + 1)

    def _dict(self, d: Dict[Any, Any], depth: int) -> None:
        for key, item in list(d.items()):
            new = self._replacement(item, depth)
            if new is not None:
                self._swap_item(d, key, new)

    def _namespace(self, namespace: Dict[str, Any], owner: Any, skip: Iterable[str] = (), depth: int = 0) -> None:
        """A module's globals or an instance's __dict__: plain item replacement (no binding)."""
        skipped = set(skip)
        for key, item in list(namespace.items()):
            if key in skipped or (isinstance(key, str) and key.startswith("__") and key.endswith("__")):
                continue
            new = self._replacement(item, depth)
            if new is not None:
                self._swap_item(namespace, key, new)

    def _class(self, cls: type) -> None:
        """Class attributes: a wrapper (a Python function) stored on a class would bind `self`, so
        it goes in as a staticmethod, which calls it exactly as the builtin was called."""
        if self._first_visit(cls):
            self._class_attributes(cls)

    def _class_attributes(self, cls: type) -> None:
        if cls.__module__.split(".")[0] in ("torch", "builtins"):
            return
        for key, item in list(vars(cls).items()):
            if key.startswith("__") and key.endswith("__"):
                continue
            if isinstance(item, staticmethod):
                wrapper = self.lookup(item.__func__)
                if wrapper is not None:
                    self._set_class_attr(cls, key, staticmethod(wrapper), item)
                elif isinstance(item.__func__, types.FunctionType):
                    self._function(item.__func__, 0)
                continue
            if isinstance(item, (classmethod, property)):
                for fn in (getattr(item, "__func__", None), getattr(item, "fget", None)):
                    if isinstance(fn, types.FunctionType):
                        self._function(fn, 0)
                continue
            if isinstance(item, types.FunctionType):
                self._function(item, 0)
                continue
            new = self._replacement(item, 1)
            if new is not None:
                bound = staticmethod(new) if isinstance(new, types.FunctionType) else new
                self._set_class_attr(cls, key, bound, item)

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        self.seen.add(id(fn))
        if (getattr(fn, "__module__", None) or "").split(".")[0] in ("torch", "torchlens_agent"):
            return  # torch's own functions look their callees up by name (and rebind covers their globals)
        defaults = fn.__defaults__
        if defaults:
            new = self._replacement(defaults, depth)
            if new is not None:
                fn.__defaults__ = new
                self.undo.append(lambda fn=fn, old=defaults: setattr(fn, "__defaults__", old))
                self.replaced += 1
        if fn.__kwdefaults__:
            self._dict(fn.__kwdefaults__, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                item = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            new = self._replacement(item, depth + 1)
            if new is not None:
                cell.cell_contents = new
                self.undo.append(lambda cell=cell, old=item: setattr(cell, "cell_contents", old))
                self.replaced += 1

    def _partial(self, p: Any, depth: int) -> None:
        """A partial's function is read-only, but its pickling state can be set again."""
        state: Any = p.__reduce__()[2]  # (func, args, keywords, __dict__)
        func, args, keywords, extra = state
        new_func = self._replacement(func, depth + 1) or func
        new_args = self._replacement(args, depth + 1) or args
        if keywords:
            self._dict(keywords, depth + 1)
        if new_func is not func or new_args is not args:
            p.__setstate__((new_func, new_args, keywords, extra))
            self.undo.append(lambda p=p, old=state: p.__setstate__(old))
            self.replaced += 1

    # -- replacing, with undo -------------------------------------------------------------------------

    def _swap_item(self, holder: Any, key: Any, new: Any) -> None:
        old = holder[key]
        holder[key] = new
        self.undo.append(lambda: holder.__setitem__(key, old))
        self.replaced += 1

    def _set_class_attr(self, cls: type, key: str, new: Any, old: Any) -> None:
        setattr(cls, key, new)
        self.undo.append(lambda: setattr(cls, key, old))
        self.replaced += 1
