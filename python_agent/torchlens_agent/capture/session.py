"""The capture session: everything that changes during one captured forward pass (tags, pass and
call ids, the module stack, addresses of parameters and buffers), and the records it sends.

A wrapper hands each call to `dispatch`; each pass made goes through `emit` to `send_pass`. Those
two are the hooks a validation session overrides; nothing on the way tests what kind of session
it is.
"""

import itertools
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..dtypes import dtype_name
from ..walk import dataclass_items, iter_tensors, map_tensors
from ..wire import INLINE_BYTES
from .args import summarize, summarize_args
from .arrays import is_own_copy, shape_of, tensor_bytes
from .ops import FUSED_NOTES, INPLACE_DUNDERS, VIEW_WRITE, is_inplace, label_name
from .plan import SavePlan

_TAG = "_tl_tag"  # the attribute a tensor's (session id, pass id) is kept in
_session_ids = itertools.count(1)
_POSITIONS = tuple(str(i) for i in range(64))  # argument positions as records carry them, made once
_perf = time.perf_counter


class CaptureSession:
    """Everything that changes during one captured forward pass."""

    def __init__(self, wire, model: nn.Module, save: Any = "all", max_repr: int = 64):
        self.wire = wire
        self.max_repr = max_repr
        self.sid = next(_session_ids)
        self.paused = 0
        # > 0 inside a call recorded as one op whose inside capture cannot record (a torch.func
        # transform's): its torch calls run paused, but are that op's own, not torchlens's work
        self.opaque = 0
        self.next_id = 1
        self.next_call = 1
        self.num_ops = 0  # tensor-returning calls dispatched (recorded or folded into inner ops)
        self.torch_calls = 0
        self.module_stack: List[Tuple[str, int]] = []
        self._modules_now: Optional[List[List[Any]]] = None  # module_stack as records carry it, until it changes
        self.module_calls: Dict[str, int] = {}
        self.module_address: Dict[int, str] = {}
        self.param_address: Dict[int, str] = {}
        self.buffer_address: Dict[int, str] = {}
        self._dynamic_modules = 0
        self._names: Dict[str, str] = {}
        for name, mod in model.named_modules():
            self.module_address.setdefault(id(mod), name)
            prefix = name + "." if name else ""
            for pname, p in mod._parameters.items():
                if p is not None:
                    self.param_address.setdefault(id(p), prefix + pname)
            for bname, b in mod._buffers.items():
                if b is not None:
                    self.buffer_address.setdefault(id(b), prefix + bname)
        self._keep: List[Any] = [model]  # objects whose ids we rely on stay alive
        self._device_names: Dict[torch.device, str] = {}
        self.selection = SavePlan(save, set(self.module_address.values()))
        # with --grads (docs/gradients.md): the hooks that send the selected passes' gradients
        self.grads: Optional[Any] = None

    # tags -----------------------------------------------------------------------------------

    def tag_of(self, t: Tensor) -> Optional[int]:
        tag = getattr(t, _TAG, None)
        if tag is not None and tag[0] == self.sid:
            return tag[1]
        return None

    def _new_pass(self, t: Tensor) -> int:
        pid = self.next_id
        self.next_id += 1
        setattr(t, _TAG, (self.sid, pid))
        return pid

    # the hooks validation overrides -------------------------------------------------------------

    def dispatch(self, orig: Callable, func: str, qualname: str, args: tuple, kwargs: Dict[str, Any]) -> Any:
        """A wrapper's call while capture is on: run the original, timed, and record what it made.
        Validation (and completeness's probe) override this to see the call around the original."""
        first_new_id = self.next_id
        t0 = _perf()
        out = orig(*args, **kwargs)
        self.on_call(func, qualname, args, kwargs, out, first_new_id, _perf() - t0)
        return out

    def send_pass(self, t: Tensor, record: Dict[str, Any]) -> None:
        """A finished record: send it, and its bytes when the plan saves the pass. Validation
        overrides this to check the pass against the saved run instead."""
        selection = self.selection
        if selection.all or selection.wants(record):
            arr, note = tensor_bytes(t)
            nbytes = arr.nbytes
            record["stored_dtype"] = arr.dtype.str
            record["stored_nbytes"] = nbytes
            if note:
                record["note"] = f"{record['note']}; {note}" if "note" in record else note
            self.wire.place(record, nbytes, arr.ndim)
            self.wire.send(record)
            if nbytes:
                # small payloads are copied into the wire's batch anyway: no need to ask (a slow question)
                self.wire.send_data(record["id"], memoryview(arr.reshape(-1).view(np.uint8).data),
                                    owned=nbytes > INLINE_BYTES and is_own_copy(arr, t))
        else:
            record["stored_dtype"] = None
            record["stored_nbytes"] = 0
            self.wire.send(record)

    # records --------------------------------------------------------------------------------------

    def emit(self, t: Tensor, record: Dict[str, Any], grad_of: Optional[Tensor] = None) -> None:
        """Fill in a record's tensor facts and hand it to `send_pass`; with --grads, watch for the
        gradient of the pass (of `grad_of` where the pass's tensor is a detached stand-in)."""
        record["shape"] = shape_of(t)
        record["dtype"] = dtype_name(t.dtype)
        device = t.device
        name = self._device_names.get(device)
        if name is None:
            name = self._device_names[device] = str(device)
        record["device"] = name
        self.send_pass(t, record)
        grads = self.grads
        if grads is not None and (self.selection.all or self.selection.wants(record)):
            grads.watch(t if grad_of is None else grad_of, record["id"])

    def _source(self, t: Tensor, kind: str, func: str, grad_of: Optional[Tensor] = None, **extra: Any) -> int:
        pid = self._new_pass(t)
        record = {"type": "pass", "id": pid, "kind": kind, "func": func, "name": func, "qualname": None,
                  "call": None, "out_index": None, "parents": [], "args": {}, "params": [],
                  "modules": self.modules_now(), "inplace": False,
                  "time_ms": 0.0}
        record.update(extra)
        self.emit(t, record, grad_of)
        return pid

    def add_inputs(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        self.paused += 1
        try:
            for path, t in iter_tensors(args, "args"):
                if self.tag_of(t) is None:
                    self._source(t, "input", "input", input_path=path)
            for path, t in iter_tensors(kwargs, "kwargs"):
                if self.tag_of(t) is None:
                    self._source(t, "input", "input", input_path=path)
        finally:
            self.paused -= 1

    def _parent_id(self, t: Tensor, params: List[str]) -> Optional[int]:
        key = id(t)
        if key in self.param_address:  # a parameter is always itself, never an activation
            params.append(self.param_address[key])
            return None
        pid = self.tag_of(t)
        if pid is not None:
            return pid
        if key in self.buffer_address:
            return self._source(t, "buffer", "buffer", address=self.buffer_address[key])
        if isinstance(t, nn.Parameter):
            # A parameter of a module the model does not own (built in forward, or global).
            self._keep.append(t)
            addr = f"~param{len(self.param_address)}"
            self.param_address[key] = addr
            params.append(addr)
            return None
        self._keep.append(t)
        return self._source(t, "constant", "constant")

    def before_write(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        """An op is about to write to its arguments: tensors from outside the pass (buffers,
        constants) become source passes now, so their saved arrays hold the values it read."""
        self.paused += 1
        try:
            for _, t in iter_tensors((args, kwargs)):
                if self.tag_of(t) is None and id(t) not in self.param_address:
                    self._parent_id(t, [])
        finally:
            self.paused -= 1

    def on_call(self, func: str, qualname: str, args: tuple, kwargs: Dict[str, Any], out: Any,
                first_new_id: int, elapsed: float) -> None:
        """Record a finished call: one pass per tensor output that no inner call produced."""
        self.torch_calls += 1
        if out is None and func in INPLACE_DUNDERS and args and isinstance(args[0], Tensor):
            out = args[0]  # __setitem__ returns None; the mutated tensor is what it produced
        if isinstance(out, Tensor):
            outputs = (("", out),)
        elif isinstance(out, (tuple, list, dict)):
            outputs = tuple(iter_tensors(out))
        else:
            return
        if not outputs:
            return
        self.num_ops += 1
        self.paused += 1
        try:
            fresh = []
            for path, t in outputs:
                if id(t) in self.param_address:
                    continue  # `w.float()` on a float parameter returns the parameter itself
                tag = self.tag_of(t)
                if tag is None or tag < first_new_id:
                    fresh.append((path, t))
            if self.grads is not None:
                for _, t in outputs:
                    tag = self.tag_of(t)
                    if tag is not None and tag >= first_new_id:  # made by an inner call, now this one's
                        self.grads.rewatch(t, tag)  # a custom Function's apply gave it a backward node
            if not fresh:
                return
            params: List[str] = []
            parents = []
            for i, a in enumerate(args):  # the common case, tensors as plain arguments, without the walker
                if isinstance(a, Tensor):
                    pid = self._parent_id(a, params)
                    if pid is not None:
                        parents.append([pid, _POSITIONS[i] if i < len(_POSITIONS) else str(i)])
                elif isinstance(a, (tuple, list, dict)):
                    for path, t in iter_tensors(a, str(i)):
                        pid = self._parent_id(t, params)
                        if pid is not None:
                            parents.append([pid, path])
            for path, t in iter_tensors(kwargs) if kwargs else ():
                pid = self._parent_id(t, params)
                if pid is not None:
                    parents.append([pid, "k:" + path])
            call = self.next_call
            self.next_call += 1
            kind = "op" if parents or params else "internal"
            summary = summarize_args(args, kwargs, self.max_repr)
            modules = self.modules_now()
            inplace = is_inplace(func, kwargs)
            name = self._names.get(func)
            if name is None:
                name = self._names[func] = label_name(func)
            time_ms = elapsed * 1000.0
            multi = not isinstance(out, Tensor)
            fused = FUSED_NOTES.get(func)
            for path, t in fresh:
                before = self.tag_of(t) if inplace else None  # the pass an in-place op's tensor was
                pid = self._new_pass(t)
                record = {"type": "pass", "id": pid, "kind": kind, "func": func,
                          "name": name, "qualname": qualname, "call": call,
                          "out_index": path if multi else None, "parents": parents,
                          "args": summary, "params": params, "modules": modules,
                          "inplace": inplace, "time_ms": time_ms}
                if fused is not None:
                    record["note"] = fused
                self.emit(t, record)
                if inplace and t._base is not None:
                    base_pass = self._view_written(t._base, pid, modules)
                    if base_pass is not None and self.grads is not None:
                        self.grads.view_write(t, t._base, before, pid, base_pass)
        finally:
            self.paused -= 1

    def _view_written(self, base: Tensor, by: int, modules: List[List[Any]]) -> Optional[int]:
        """An in-place op wrote through a view: its base now holds new values, which later readers
        of the base must see as a pass of their own (parents: the base before, and the write).
        Returns that pass's id (None when the base is not a pass)."""
        before = self.tag_of(base)
        if before is None or id(base) in self.param_address:
            return None
        pid = self._new_pass(base)
        self.emit(base, {"type": "pass", "id": pid, "kind": "op", "func": VIEW_WRITE, "name": VIEW_WRITE,
                          "qualname": None, "call": None, "out_index": None,
                          "parents": [[before, "0"], [by, "1"]], "args": {}, "params": [],
                          "modules": modules, "inplace": True, "time_ms": 0.0,
                          "note": "the base of a view that an in-place op wrote to"})
        return pid

    # modules -------------------------------------------------------------------------------------

    def enter_module(self, mod: nn.Module, args: tuple, kwargs: Dict[str, Any]) -> Tuple[str, int, List[int]]:
        addr = self.module_address.get(id(mod))
        if addr is None:
            # Built inside forward: give it a name under the module that made it.
            self._dynamic_modules += 1
            parent = self.module_stack[-1][0] if self.module_stack else ""
            addr = f"{parent}.~{type(mod).__name__}{self._dynamic_modules}".lstrip(".")
            self.module_address[id(mod)] = addr
            self._keep.append(mod)
        n = self.module_calls.get(addr, 0) + 1
        self.module_calls[addr] = n
        inputs = [pid for pid in (self.tag_of(t) for _, t in iter_tensors((args, kwargs))) if pid is not None]
        self.module_stack.append((addr, n))
        self._modules_now = None
        return addr, n, inputs

    def pop_module(self) -> None:
        self.module_stack.pop()
        self._modules_now = None

    def modules_now(self) -> List[List[Any]]:
        """The module stack as records carry it: one list shared by the records made under it
        (they are sent at once, never changed)."""
        now = self._modules_now
        if now is None:
            now = self._modules_now = [list(m) for m in self.module_stack]
        return now

    def exit_module(self, mod: nn.Module, entry: Tuple[str, int, List[int]], out: Any) -> None:
        self.pop_module()
        addr, n, inputs = entry
        outputs = [pid for pid in (self.tag_of(t) for _, t in iter_tensors(out)) if pid is not None]
        parent = list(self.module_stack[-1]) if self.module_stack else None
        self.wire.send({"type": "module", "address": addr, "call": n, "class": type(mod).__name__,
                        "parent": parent, "inputs": inputs, "outputs": outputs})

    # outputs ---------------------------------------------------------------------------------------

    def alias_outputs(self, out: Any) -> Any:
        """With --grads: the output with each tensor that requires grad replaced by a stand-in
        (`GradWatch.output_alias`) carrying its pass's tag; the output passes and the target are
        made from these."""
        grads = self.grads
        if grads is None:
            return out

        def alias(t: Tensor) -> Tensor:
            a = grads.output_alias(t)
            if a is not t:
                tag = getattr(t, _TAG, None)
                if tag is not None:
                    setattr(a, _TAG, tag)
            return a

        return map_tensors(out, alias)

    def add_outputs(self, out: Any) -> Dict[str, Any]:
        """Emit an output pass per output tensor; return the output structure for `done`."""
        self.paused += 1
        try:
            return self._describe(out, "out")
        finally:
            self.paused -= 1

    def _describe(self, obj: Any, path: str) -> Dict[str, Any]:
        if isinstance(obj, Tensor):
            parent = self.tag_of(obj)
            if parent is None:
                parent = self._parent_id(obj, [])
            out_t = obj.detach()  # a distinct object, so the output pass gets its own tag
            pid = self._source(out_t, "output", "output", grad_of=obj,
                               parents=[[parent, "0"]] if parent else [], output_path=path)
            return {"kind": "tensor", "id": pid}
        if isinstance(obj, (tuple, list)):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {"kind": kind, "items": [self._describe(x, f"{path}.{i}") for i, x in enumerate(obj)]}
        if isinstance(obj, dict):
            return {"kind": "dict", "items": {str(k): self._describe(v, f"{path}.{k}") for k, v in obj.items()}}
        fields = dataclass_items(obj)  # a dataclass output: its fields, as iter_tensors walks them
        if fields is not None:
            return {"kind": "dict", "items": {name: self._describe(v, f"{path}.{name}") for name, v in fields}}
        return {"kind": "value", "repr": summarize(obj, self.max_repr)}


