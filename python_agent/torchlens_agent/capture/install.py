"""Installing the wrappers: which callables of torch are replaced (ops.py decides by name), one
wrapper per function object wherever it is reached, and putting every original back.

Also the rebinding of names and references that took a torch function before the install
(`from torch import relu`, `self.act = F.gelu`: references.py), undone by `restore` too.
"""

import inspect
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .ops import (FUNC_CALLS, FUNC_TRANSFORMS, FUNCTION_TYPES, NAMESPACES, SKIP_OP_NAMESPACES, TENSOR_PAUSE,
                  TENSOR_PROPERTIES, TENSOR_SKIP, is_op_name, is_private_op_name)
from .references import ReferenceWalk
from .slots import set_sq_item, sq_item
from .wrappers import (OpProxy, Switch, make_function_apply, make_module_call, make_paused_op, make_pausing,
                       make_property, make_script_call, make_transform, make_wrapper)

_MISSING = object()  # an attribute the owner did not have itself: deleted on restore


class Wrappers:
    """Installs and restores every wrapper; restoring leaves torch exactly as it was."""

    def __init__(self) -> None:
        self.switch = Switch()
        self._saved: List[Tuple[Any, str, Any]] = []  # (owner, name, original attribute or _MISSING)
        self.installed = False
        self.count = 0
        self._by_id: Dict[int, Callable] = {}  # original function id -> its wrapper
        self._undo: List[Callable[[], None]] = []  # puts back references rebind_references replaced

    def install(self) -> None:
        if self.installed:
            return
        self._sq_item = sq_item(Tensor)
        switch = self.switch
        by_id = self._by_id  # one wrapper per function object, whatever namespace holds it
        for qualprefix, ns in NAMESPACES:
            if ns is None:
                continue
            for name, orig in list(vars(ns).items()):
                if is_op_name(name) and isinstance(orig, FUNCTION_TYPES) and not hasattr(orig, "_tl_wrapper"):
                    # An alias (a stray `torch.obj`) takes the name the function is known by.
                    real = getattr(orig, "__name__", name)
                    func = real if real != name and vars(ns).get(real) is orig else name
                    self._replace(ns, name, self._wrapper_for(orig, func, f"{qualprefix}.{func}", by_id))
        # torch._VF forwards to the C functions that nn.LSTM, dropout & co. call directly.
        vf = getattr(torch, "_VF", None)
        if vf is not None:
            for name in dir(torch._C._VariableFunctions):
                orig = getattr(torch._C._VariableFunctions, name, None)
                private = is_private_op_name(name)
                if (is_op_name(name) or private) and isinstance(orig, FUNCTION_TYPES):
                    self._replace(vf, name, self._wrapper_for(orig, name, f"torch._VF.{name}", by_id))
                    if private and vars(torch).get(name) is orig:  # torch._weight_norm & co.
                        self._replace(torch, name, self._wrapper_for(orig, name, f"torch.{name}", by_id))
        # TorchScript functions (@torch.jit.script) run their ops in C++: the call is one op.
        script_function = getattr(torch._C, "ScriptFunction", None)
        if script_function is not None:
            self._replace(script_function, "__call__", make_script_call(script_function.__call__, switch))
        tensor_dict = vars(Tensor)
        for name in TENSOR_PAUSE:
            self._replace(Tensor, name, make_pausing(getattr(Tensor, name), switch), tensor_dict)
        for name in TENSOR_PROPERTIES:
            raw = next((vars(k)[name] for k in Tensor.__mro__ if name in vars(k)), None)
            if raw is not None:
                self._replace(Tensor, name, make_property(raw, name, switch), tensor_dict)
        for name in dir(Tensor):
            if name in TENSOR_SKIP or name in TENSOR_PAUSE or name in TENSOR_PROPERTIES:
                continue
            if name.startswith("_") and not name.startswith("__"):
                continue
            orig = getattr(Tensor, name, None)
            if isinstance(orig, FUNCTION_TYPES):
                self._replace(Tensor, name, self._wrapper_for(orig, name, f"Tensor.{name}", by_id), tensor_dict)
        self._replace(nn.Module, "__call__", make_module_call(vars(nn.Module)["__call__"], switch))
        self._wrap_func_transforms()
        self._wrap_op_namespaces()
        function = torch.autograd.Function
        self._replace(function, "apply", make_function_apply(inspect.getattr_static(function, "apply"), switch))
        set_sq_item(Tensor, self._sq_item)  # tensors stay non-sequences (slots.py)
        self.installed = True

    def _wrap_func_transforms(self) -> None:
        """torch.func's transforms (torch 2; torch.vmap is torch.func.vmap): the ops inside run on
        functorch's wrapped tensors (batched, grad-tracking), which have no storage of their own to
        save or replay. A transformed function's call is one op, named after the transform, with
        capture paused inside; `rebind` points other modules' names for them here (by_id)."""
        func_ns = sys.modules.get("torch.func")
        if func_ns is None:
            return
        for name in FUNC_TRANSFORMS + FUNC_CALLS:
            orig = vars(func_ns).get(name)
            if orig is None or hasattr(orig, "_tl_wrapper"):
                continue
            wrapper = self._by_id.get(id(orig))
            if wrapper is None:
                make = make_transform if name in FUNC_TRANSFORMS else make_paused_op
                wrapper = self._by_id[id(orig)] = make(orig, name, self.switch)
            self._replace(func_ns, name, wrapper)
            if vars(torch).get(name) is orig:  # torch.vmap
                self._replace(torch, name, wrapper)

    def _wrap_op_namespaces(self) -> None:
        """Ops reached through `torch.ops.<namespace>.<op>` (quantized modules, torchvision's
        roi_align and nms, custom C++ ops). Namespaces make their op packets lazily, so both the
        packets made already and the lookup that makes new ones are wrapped."""
        ops_module = getattr(torch, "_ops", None)
        namespace_class = getattr(ops_module, "_OpNamespace", None)
        if namespace_class is None or "__getattr__" not in vars(namespace_class):
            return
        wrappers = self

        def wrap_packet(namespace: Any, name: str, packet: Any) -> Any:
            qualname = f"torch.ops.{getattr(namespace, 'name', '?')}.{name}"
            proxy = OpProxy(packet, make_wrapper(packet, name, qualname, wrappers.switch))
            wrappers._replace(namespace, name, proxy)
            return proxy

        for ns_name, namespace in list(vars(torch.ops).items()):
            if isinstance(namespace, namespace_class) and ns_name not in SKIP_OP_NAMESPACES:
                for name, packet in list(vars(namespace).items()):
                    if callable(packet) and not name.startswith("_") and not isinstance(packet, (type, OpProxy)):
                        wrap_packet(namespace, name, packet)
        original_getattr = vars(namespace_class)["__getattr__"]

        def namespace_getattr(namespace, name):
            packet = original_getattr(namespace, name)
            if name.startswith("_") or getattr(namespace, "name", None) in SKIP_OP_NAMESPACES or not callable(packet):
                return packet
            return wrap_packet(namespace, name, packet)

        self._replace(namespace_class, "__getattr__", namespace_getattr)

    def rebind(self, modules: List[Any]) -> None:
        """Point module-level names bound to wrapped originals (`from torch import relu`) at their
        wrappers; restore() puts them back."""
        for mod in modules:
            namespace = vars(mod)
            for name, value in list(namespace.items()):
                wrapper = self._by_id.get(id(value)) if callable(value) else None
                if wrapper is not None and wrapper is not value:
                    self._replace(mod, name, wrapper)

    def rebind_references(self, model: nn.Module, modules: List[Any]) -> int:
        """Point references to wrapped originals that the model reaches without a name lookup
        (attributes, registries, defaults, partials, closures: references.py) at their wrappers;
        restore() puts them back. Returns how many were replaced."""
        walk = ReferenceWalk(lambda value: self._by_id.get(id(value)), self._undo)
        for mod in modules:
            walk.module_globals(mod)
        walk.model(model)
        return walk.replaced

    def _wrapper_for(self, orig: Callable, name: str, qualname: str, by_id: Dict[int, Callable]) -> Callable:
        wrapper = by_id.get(id(orig))
        if wrapper is None:
            wrapper = by_id[id(orig)] = make_wrapper(orig, name, qualname, self.switch)
        return wrapper

    def _replace(self, owner: Any, name: str, new: Any, own_dict: Optional[Mapping[str, Any]] = None) -> None:
        original = (own_dict if own_dict is not None else vars(owner)).get(name, _MISSING)
        self._saved.append((owner, name, original))
        setattr(owner, name, new)
        self.count += 1

    def restore(self) -> None:
        """Put every original back, in reverse order of replacement."""
        self.switch.session = None
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for owner, name, original in reversed(self._saved):
            if original is _MISSING:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
            else:
                setattr(owner, name, original)
        self._saved.clear()
        self._by_id.clear()
        set_sq_item(Tensor, getattr(self, "_sq_item", None))
        self.installed = False
