"""Capture: wrap torch's callables, tag every tensor with the pass that made it, emit one record per op.

How it works. `Wrappers.install()` replaces the tensor-producing callables of `torch`,
`torch.nn.functional`, `torch.linalg`, `torch.fft`, `torch.special` and `torch.Tensor` (methods,
operators, properties such as `.T`) and `nn.Module.__call__` with thin wrappers. A wrapper does
nothing but call the original while no `CaptureSession` is active, so wrappers may stay installed
while user code is imported and built (its `from torch import relu` then still reaches us).

During a forward pass every tensor a recorded op returns is tagged (`_tl_tag`: session id, pass
id). A call's parents are the tagged tensors among its arguments. Nested calls: when a wrapped
function is Python built on other wrapped functions (`F.relu` → `torch.relu`,
`F.multi_head_attention_forward`), the inner calls are recorded and the outer call only for
outputs no inner call produced, so internals stay visible and nothing is recorded twice.

All mutable state of one forward pass lives in the `CaptureSession`.
"""

import ctypes
import functools
import gc
import inspect
import itertools
import math
import os
import re
import sys
import time
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .compat import eager_forward
from .references import ReferenceWalk
from .walk import dataclass_items, iter_tensors
from .wire import INLINE_BYTES

from torch import Tensor  # noqa: E402  (a class, usable in annotations)
_TAG = "_tl_tag"
_session_ids = itertools.count(1)

# -- which callables are ops ---------------------------------------------------------------

NAMESPACES: List[Tuple[str, Any]] = [
    ("torch.nn.functional", torch.nn.functional),
    ("torch", torch),
    ("torch.linalg", getattr(torch, "linalg", None)),
    ("torch.fft", getattr(torch, "fft", None)),
    ("torch.special", getattr(torch, "special", None)),
]

# Callables that never produce a tensor from tensors, or that manage torch itself.
_SKIP_NAMES = frozenset(
    """
    typename is_tensor is_storage numel compile load save manual_seed seed initial_seed
    default_generator get_rng_state set_rng_state get_default_dtype set_default_dtype
    set_default_tensor_type set_printoptions set_grad_enabled no_grad enable_grad inference_mode
    is_grad_enabled is_inference_mode_enabled set_flush_denormal set_num_threads get_num_threads
    set_num_interop_threads get_num_interop_threads set_anomaly_enabled is_anomaly_enabled
    use_deterministic_algorithms are_deterministic_algorithms_enabled result_type can_cast
    promote_types broadcast_shapes vmap cond export classproperty compiled_with_cxx11_abi
    import_ir_module import_ir_module_from_buffer fork wait sym_int sym_float sym_not sym_max
    sym_min sym_ite sym_sqrt sym_sum unravel_index_shape chunk_size _assert assert_async
    annotate autocast_decrement_nesting autocast_increment_nesting clear_autocast_cache
    has_torch_function has_torch_function_unary has_torch_function_variadic
    handle_torch_function boolean_dispatch get_device get_file_path is_autocast_enabled
    is_nonzero is_same_size is_floating_point is_complex is_conj is_neg is_signed
    is_distributed is_inference is_vulkan_available frombuffer_shape from_dlpack_shape
    """.split()
)
_SKIP_PREFIXES = ("is_", "set_", "get_", "use_", "are_", "has_", "_")
# Private C functions of torch that torch's own Python calls and that compute tensors
# (`_VF._pack_padded_sequence`, `torch._weight_norm`, `torch._unique2`): ops, except these.
_PRIVATE_SKIP = frozenset("_assert _assert_async _has_compatible_shallow_copy_type _use_cudnn_rnn_flatten_weight "
                          "_cudnn_rnn_flatten_weight _is_functional_tensor _sync _enable_functionalization "
                          "_disable_functionalization".split())


def _is_private_op_name(name: str) -> bool:
    return (name.startswith("_") and not name.startswith("__") and name not in _PRIVATE_SKIP
            and _is_op_name(name[1:]))

# Tensor attributes that are not ops (metadata, conversions out of torch, autograd plumbing).
_TENSOR_SKIP = frozenset(
    """
    __class__ __init__ __new__ __getattribute__ __setattr__ __delattr__ __dir__ __repr__
    __str__ __format__ __hash__ __reduce__ __reduce_ex__ __setstate__ __getstate__ __deepcopy__
    __torch_function__ __torch_dispatch__ __subclasshook__ __init_subclass__ __sizeof__ __len__
    __bool__ __nonzero__ __index__ __int__ __long__ __float__ __complex__ __array__ __array_wrap__
    __array_priority__ __contains__ __dlpack__ __dlpack_device__ __weakref__ __dict__ __module__
    __doc__ __cuda_array_interface__ __iter__ __reversed__ __delitem__ __annotations__ __slots__
    dim ndimension size numel nelement stride storage_offset element_size item tolist numpy
    data_ptr storage untyped_storage _storage get_device is_contiguous is_floating_point
    is_complex is_signed is_set_to is_shared is_pinned is_same_size is_nonzero is_inference
    is_coalesced is_conj is_neg backward register_hook retain_grad requires_grad_ share_memory_
    record_stream pin_memory dim_order has_names refine_names rename rename_ align_to
    align_as unflatten_names names data grad grad_fn requires_grad is_leaf output_nr _version
    _base _cdata shape dtype device layout is_cuda is_sparse is_quantized is_meta is_mkldnn
    is_mps is_ort is_vulkan is_xpu is_ipu is_xla is_nested is_sparse_csr itemsize nbytes ndim
    retains_grad _backward_hooks _grad _grad_fn _python_dispatch _post_accumulate_grad_hooks
    map_ map2_ apply_ new_tensor_shape type_as_shape q_scale q_zero_point qscheme
    q_per_channel_axis dense_dim sparse_dim _nnz _is_view _is_zerotensor __torch_function_impl
    """.split()
)
# Tensor properties that return a tensor: wrapped as properties.
_TENSOR_PROPERTIES = ("T", "mT", "H", "mH", "real", "imag")
# Calls whose own work is printing or copying out: capture pauses inside them.
_TENSOR_PAUSE = ("__repr__", "__str__", "__format__", "__array__", "tolist", "numpy", "item")

# What the completeness check (completeness.py) does not count: the calls capture leaves alone.
NOT_OPS = _TENSOR_SKIP | frozenset(_TENSOR_PAUSE) | _SKIP_NAMES

_INPLACE_DUNDERS = frozenset(
    "__iadd__ __isub__ __imul__ __itruediv__ __idiv__ __ifloordiv__ __imod__ __ipow__ __iand__ "
    "__ior__ __ixor__ __ilshift__ __irshift__ __imatmul__ __setitem__".split()
)
# torch.ops namespaces left alone: the profiler's and the compiler's own.
_SKIP_OP_NAMESPACES = frozenset({"profiler", "prims", "nvprims", "pyops", "inductor", "higher_order", "_quantized_decomposed"})


class _OpProxy:
    """Stands in for a `torch.ops` op packet: calls go through the capture wrapper, attribute
    lookups (`.default`, overloads) reach the packet."""

    _tl_wrapper = True

    def __init__(self, packet: Any, call: Callable) -> None:
        self._packet = packet
        self._call = call
        self.__name__ = getattr(packet, "__name__", "op")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._packet, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, OpOverloadPacket), as torch's own code asks
        return type(self._packet)


# Fused kernels that compute, in one op, what torch otherwise does in many: the log says so, and
# which flag shows the inside (docs/capture.md).
FUSED_NOTES = {
    "_transformer_encoder_layer_fwd": "torch's fused fast path for a whole nn.TransformerEncoderLayer (eval mode, "
                                      "autograd off): its attention and feed-forward ops run inside this one kernel; "
                                      "extract with --grad to record them one by one",
    "_native_multi_head_attention": "torch's fused fast path for nn.MultiheadAttention (eval mode, autograd off): "
                                    "the projections, attention weights and softmax run inside this one kernel; "
                                    "extract with --grad to record them one by one",
    "scaled_dot_product_attention": "a fused attention kernel: the attention weights and their softmax are computed "
                                    "inside it and are not passes of their own (modules called with "
                                    "need_weights=True compute them op by op)",
}

# The pass made for the base of a view written in place (`y = x[:, 0]; y.add_(1)` changes x).
VIEW_WRITE = "view_write"

_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
                   types.WrapperDescriptorType, types.BuiltinMethodType)


def label_name(func: str) -> str:
    """The name an op has in labels and selectors: `__add__` → `add`, `relu_` → `relu`, `T` → `t`.

    Defined here only: every record carries it as `name`, and the CLI uses that.
    """
    name = re.sub(r"[^a-z0-9_]+", "_", func.lower()).strip("_")
    return name or "op"


def _is_op_name(name: str) -> bool:
    return name not in _SKIP_NAMES and not name.startswith(_SKIP_PREFIXES)


_INPLACE_BY_NAME: Dict[str, bool] = {}
_POSITIONS = tuple(str(i) for i in range(64))


# Ops that write to arguments their names do not mark as in-place: batch norm's running statistics.
_WRITES_STATE = frozenset("batch_norm native_batch_norm _native_batch_norm_legit _batch_norm_impl_index "
                          "cudnn_batch_norm miopen_batch_norm instance_norm _batch_norm_with_update "
                          "_native_batch_norm_legit_functional".split())


def writes_arguments(func: str) -> bool:
    """The op may change a tensor it is given (`add_`, `x[i] = v`, batch norm's running stats): the
    tensors it reads from outside the pass must be recorded before it runs."""
    return _is_inplace(func, {}) or func in _WRITES_STATE


def _is_inplace(func: str, kwargs: Dict[str, Any]) -> bool:
    by_name = _INPLACE_BY_NAME.get(func)
    if by_name is None:
        by_name = _INPLACE_BY_NAME[func] = func in _INPLACE_DUNDERS or (func.endswith("_") and not func.endswith("__"))
    return by_name or (bool(kwargs) and kwargs.get("out") is not None)


# -- summaries of non-tensor arguments ------------------------------------------------------

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
        return str(value).replace("torch.", "")
    if isinstance(value, (tuple, list)) and depth < 3:
        if len(value) > 16:
            return [summarize(v, limit, depth + 1) for v in value[:16]] + [f"…{len(value) - 16} more"]
        return [summarize(v, limit, depth + 1) for v in value]
    text = repr(value)
    if isinstance(value, nn.Module):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _summarize_args(args: tuple, kwargs: Dict[str, Any], limit: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for i, a in enumerate(args):
        if not isinstance(a, Tensor):
            out[str(i)] = summarize(a, limit)
    for k, v in kwargs.items():
        if not isinstance(v, Tensor):
            out["k:" + k] = summarize(v, limit)
    return out


# -- bytes of a tensor ------------------------------------------------------------------------

_SUBSTITUTES = {torch.bfloat16: torch.float32, torch.complex32: torch.complex64}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"):
    if hasattr(torch, _name):
        _SUBSTITUTES[getattr(torch, _name)] = torch.float32


_DTYPE_NAMES: Dict[torch.dtype, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


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
        note = f"{str(t.layout).replace('torch.', '')} tensor stored dense"
    if d.is_quantized:
        d = d.int_repr()
        note = "quantized tensor stored as its integer representation"
    if d.dtype in _SUBSTITUTES:
        d = d.to(_SUBSTITUTES[d.dtype])
    if d.device.type != "cpu":
        d = d.cpu()
    if _IS_COMPLEX(d) and hasattr(d, "resolve_conj"):  # only complex tensors carry conj/neg bits
        d = d.resolve_conj().resolve_neg()
    arr = _NUMPY(_CONTIGUOUS(d))
    return arr, note


def _is_own_copy(arr: np.ndarray, t: Tensor) -> bool:
    """arr is memory that tensor_bytes made (a conversion, a copy off the GPU), which nothing in the
    model can change: it may be sent without another copy."""
    try:
        return arr.ctypes.data != t.data_ptr()
    except RuntimeError:  # tensors without plain storage (sparse): copy to be safe
        return False


# -- what to save ---------------------------------------------------------------------------------

class SavePlan:
    """Which passes get their bytes sent: "all", "none", or a selection the agent can decide as ops
    happen (docs/wire.md): `ids` (pass ids, from a dry run), `words` (a module address when the
    model has one by that name, else a function name), `modules` (addresses), `ordinals`
    (0-based positions in execution order, i.e. pass id - 1)."""

    def __init__(self, spec: Any, addresses: set):
        self.all = spec == "all" or spec is None
        self.none = spec == "none"
        spec = spec if isinstance(spec, dict) else {}
        words = list(spec.get("words", []))
        self.modules = set(spec.get("modules", [])) | {w for w in words if w in addresses}
        self.names = {w for w in words if w not in addresses}
        self.ids = set(spec.get("ids", [])) | {k + 1 for k in spec.get("ordinals", [])}

    def wants(self, record: Dict[str, Any]) -> bool:
        if self.all:
            return True
        if self.none:
            return False
        if record["id"] in self.ids or record["name"] in self.names or record["func"] in self.names:
            return True
        return bool(self.modules) and any(m[0] in self.modules for m in record["modules"])


# -- the session ------------------------------------------------------------------------------

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
        self.num_calls = 0
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
        # set by validation (replay.py): called instead of the plain record path
        self.replay: Optional[Callable[..., Any]] = None
        # validation only: a wrapper is calling its original now (completeness.py reads it)
        self.dispatching = False

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

    # emitting ----------------------------------------------------------------------------------

    def _emit(self, t: Tensor, record: Dict[str, Any]) -> None:
        """Fill in a record's tensor facts, send it, and its bytes when saving."""
        record["shape"] = shape_of(t)
        record["dtype"] = dtype_name(t.dtype)
        device = t.device
        name = self._device_names.get(device)
        if name is None:
            name = self._device_names[device] = str(device)
        record["device"] = name
        selection = self.selection
        if selection.all or selection.wants(record):
            arr, note = tensor_bytes(t)
            nbytes = arr.nbytes
            record["stored_dtype"] = arr.dtype.str
            record["nbytes"] = nbytes
            if note:
                record["note"] = f"{record['note']}; {note}" if "note" in record else note
            self.wire.send(record)
            if nbytes:
                # small payloads are copied into the wire's batch anyway: no need to ask (a slow question)
                self.wire.send_data(record["id"], memoryview(arr.reshape(-1).view(np.uint8).data),
                                    owned=nbytes > INLINE_BYTES and _is_own_copy(arr, t))
        else:
            record["stored_dtype"] = None
            record["nbytes"] = 0
            self.wire.send(record)

    def _source(self, t: Tensor, kind: str, func: str, **extra: Any) -> int:
        pid = self._new_pass(t)
        record = {"type": "op", "id": pid, "kind": kind, "func": func, "name": func, "qualname": None,
                  "call": None, "out_index": None, "parents": [], "args": {}, "params": [],
                  "modules": self.modules_now(), "inplace": False,
                  "time_ms": 0.0}
        record.update(extra)
        self._emit(t, record)
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
        self.num_calls += 1
        if out is None and func in _INPLACE_DUNDERS and args and isinstance(args[0], Tensor):
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
            summary = _summarize_args(args, kwargs, self.max_repr)
            modules = self.modules_now()
            inplace = _is_inplace(func, kwargs)
            name = self._names.get(func)
            if name is None:
                name = self._names[func] = label_name(func)
            time_ms = elapsed * 1000.0
            multi = not isinstance(out, Tensor)
            fused = FUSED_NOTES.get(func)
            for path, t in fresh:
                pid = self._new_pass(t)
                record = {"type": "op", "id": pid, "kind": kind, "func": func,
                          "name": name, "qualname": qualname, "call": call,
                          "out_index": path if multi else None, "parents": parents,
                          "args": summary, "params": params, "modules": modules,
                          "inplace": inplace, "time_ms": time_ms}
                if fused is not None:
                    record["note"] = fused
                self._emit(t, record)
                if inplace and t._base is not None:
                    self._view_written(t._base, pid, modules)
        finally:
            self.paused -= 1

    def _view_written(self, base: Tensor, by: int, modules: List[List[Any]]) -> None:
        """An in-place op wrote through a view: its base now holds new values, which later readers
        of the base must see as a pass of their own (parents: the base before, and the write)."""
        before = self.tag_of(base)
        if before is None or id(base) in self.param_address:
            return
        pid = self._new_pass(base)
        self._emit(base, {"type": "op", "id": pid, "kind": "op", "func": VIEW_WRITE, "name": VIEW_WRITE,
                          "qualname": None, "call": None, "out_index": None,
                          "parents": [[before, "0"], [by, "1"]], "args": {}, "params": [],
                          "modules": modules, "inplace": True, "time_ms": 0.0,
                          "note": "the base of a view that an in-place op wrote to"})

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
            pid = self._source(out_t, "output", "output", parents=[[parent, "0"]] if parent else [],
                               output_path=path)
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


# -- the wrappers --------------------------------------------------------------------------------

class _Switch:
    """The one pointer from installed wrappers to the active session (None: pass through)."""

    session: Optional[CaptureSession] = None


def _make_wrapper(orig: Callable, func: str, qualname: str, switch: _Switch) -> Callable:
    perf = time.perf_counter
    writes = writes_arguments(func)  # decided once per function, not per call

    def wrapper(*args, **kwargs):
        s = switch.session
        if s is None or s.paused:
            return orig(*args, **kwargs)
        if writes or (kwargs and kwargs.get("out") is not None):
            s.before_write(args, kwargs)
        if s.replay is not None:  # validation: the session replays each op as it is recorded
            return s.replay(orig, func, qualname, args, kwargs)
        first_new_id = s.next_id
        t0 = perf()
        out = orig(*args, **kwargs)
        s.on_call(func, qualname, args, kwargs, out, first_new_id, perf() - t0)
        return out

    try:
        wrapper.__name__ = getattr(orig, "__name__", func)
        wrapper.__qualname__ = getattr(orig, "__qualname__", func)
        wrapper.__doc__ = getattr(orig, "__doc__", None)
        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    wrapper._tl_wrapper = True  # type: ignore[attr-defined]
    return wrapper


def _make_pausing(orig: Callable, switch: _Switch) -> Callable:
    def wrapper(*args, **kwargs):
        s = switch.session
        if s is None:
            return orig(*args, **kwargs)
        s.paused += 1
        try:
            return orig(*args, **kwargs)
        finally:
            s.paused -= 1

    wrapper.__name__ = getattr(orig, "__name__", "wrapper")
    wrapper._tl_wrapper = True  # type: ignore[attr-defined]
    return wrapper


# torch.func's transforms that return a transformed function, and those that compute at once.
_FUNC_TRANSFORMS = ("vmap", "grad", "grad_and_value", "jacrev", "jacfwd", "hessian", "functionalize")
_FUNC_CALLS = ("jvp", "vjp", "linearize")


def _make_opaque(orig: Callable, switch: _Switch) -> Callable:
    """orig with capture paused inside, its calls marked as the calling op's own (`opaque`)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        s = switch.session
        if s is None:
            return orig(*args, **kwargs)
        s.paused += 1
        s.opaque += 1
        try:
            return orig(*args, **kwargs)
        finally:
            s.opaque -= 1
            s.paused -= 1

    return call


def _make_paused_op(orig: Callable, func: str, switch: _Switch) -> Callable:
    """One op for a call whose inside capture must not see (it runs on functorch's wrapped tensors)."""
    return _make_wrapper(_make_opaque(orig, switch), func, f"torch.func.{func}", switch)


def _make_transform(orig: Callable, func: str, switch: _Switch) -> Callable:
    """`vmap(fn, ...)` & co.: the function they return is one op when called (`_make_paused_op`)."""
    def transform(*args: Any, **kwargs: Any) -> Callable:
        return _make_paused_op(orig(*args, **kwargs), func, switch)

    transform.__name__ = getattr(orig, "__name__", func)
    transform.__wrapped__ = orig  # type: ignore[attr-defined]
    transform._tl_wrapper = True  # type: ignore[attr-defined]
    return transform


def _make_property(orig: Any, func: str, switch: _Switch) -> property:
    getter = _make_wrapper(lambda self: orig.__get__(self, Tensor), func, f"Tensor.{func}", switch)
    getter.__name__ = func  # the property's name, as torch reports the attribute it gets
    def setter(self, value, _orig=orig):  # noqa: ANN001
        _orig.__set__(self, value)

    return property(getter, setter if hasattr(orig, "__set__") else None)


_MISSING = object()


class Wrappers:
    """Installs and restores every wrapper; restoring leaves torch exactly as it was."""

    def __init__(self) -> None:
        self.switch = _Switch()
        self._saved: List[Tuple[Any, str, Any]] = []  # (owner, name, original attribute or _MISSING)
        self.installed = False
        self.count = 0
        self._by_id: Dict[int, Callable] = {}  # original function id -> its wrapper
        self._undo: List[Callable[[], None]] = []  # puts back references rebind_references replaced

    def install(self) -> None:
        if self.installed:
            return
        self._sq_item = _sq_item(Tensor)
        switch = self.switch
        by_id = self._by_id  # one wrapper per function object, whatever namespace holds it
        for qualprefix, ns in NAMESPACES:
            if ns is None:
                continue
            for name, orig in list(vars(ns).items()):
                if _is_op_name(name) and isinstance(orig, _FUNCTION_TYPES) and not hasattr(orig, "_tl_wrapper"):
                    # An alias (a stray `torch.obj`) takes the name the function is known by.
                    real = getattr(orig, "__name__", name)
                    func = real if real != name and vars(ns).get(real) is orig else name
                    self._replace(ns, name, self._wrapper_for(orig, func, f"{qualprefix}.{func}", by_id))
        # torch._VF forwards to the C functions that nn.LSTM, dropout & co. call directly.
        vf = getattr(torch, "_VF", None)
        if vf is not None:
            for name in dir(torch._C._VariableFunctions):
                orig = getattr(torch._C._VariableFunctions, name, None)
                private = _is_private_op_name(name)
                if (_is_op_name(name) or private) and isinstance(orig, _FUNCTION_TYPES):
                    self._replace(vf, name, self._wrapper_for(orig, name, f"torch._VF.{name}", by_id))
                    if private and vars(torch).get(name) is orig:  # torch._weight_norm & co.
                        self._replace(torch, name, self._wrapper_for(orig, name, f"torch.{name}", by_id))
        # TorchScript functions (@torch.jit.script) run their ops in C++: the call is one op.
        script_function = getattr(torch._C, "ScriptFunction", None)
        if script_function is not None:
            self._replace(script_function, "__call__", _make_script_call(script_function.__call__, switch))
        tensor_dict = vars(Tensor)
        for name in _TENSOR_PAUSE:
            self._replace(Tensor, name, _make_pausing(getattr(Tensor, name), switch), tensor_dict)
        for name in _TENSOR_PROPERTIES:
            raw = next((vars(k)[name] for k in Tensor.__mro__ if name in vars(k)), None)
            if raw is not None:
                self._replace(Tensor, name, _make_property(raw, name, switch), tensor_dict)
        for name in dir(Tensor):
            if name in _TENSOR_SKIP or name in _TENSOR_PAUSE or name in _TENSOR_PROPERTIES:
                continue
            if name.startswith("_") and not name.startswith("__"):
                continue
            orig = getattr(Tensor, name, None)
            if isinstance(orig, _FUNCTION_TYPES):
                self._replace(Tensor, name, self._wrapper_for(orig, name, f"Tensor.{name}", by_id), tensor_dict)
        self._replace(nn.Module, "__call__", _make_module_call(vars(nn.Module)["__call__"], switch))
        self._wrap_func_transforms()
        self._wrap_op_namespaces()
        function = torch.autograd.Function
        self._replace(function, "apply", _make_function_apply(inspect.getattr_static(function, "apply"), switch))
        _set_sq_item(Tensor, self._sq_item)  # tensors stay non-sequences (see _sq_item)
        self.installed = True

    def _wrap_func_transforms(self) -> None:
        """torch.func's transforms (torch 2; torch.vmap is torch.func.vmap): the ops inside run on
        functorch's wrapped tensors (batched, grad-tracking), which have no storage of their own to
        save or replay. A transformed function's call is one op, named after the transform, with
        capture paused inside; `rebind` points other modules' names for them here (by_id)."""
        func_ns = sys.modules.get("torch.func")
        if func_ns is None:
            return
        for name in _FUNC_TRANSFORMS + _FUNC_CALLS:
            orig = vars(func_ns).get(name)
            if orig is None or hasattr(orig, "_tl_wrapper"):
                continue
            wrapper = self._by_id.get(id(orig))
            if wrapper is None:
                make = _make_transform if name in _FUNC_TRANSFORMS else _make_paused_op
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
            proxy = _OpProxy(packet, _make_wrapper(packet, name, qualname, wrappers.switch))
            wrappers._replace(namespace, name, proxy)
            return proxy

        for ns_name, namespace in list(vars(torch.ops).items()):
            if isinstance(namespace, namespace_class) and ns_name not in _SKIP_OP_NAMESPACES:
                for name, packet in list(vars(namespace).items()):
                    if callable(packet) and not name.startswith("_") and not isinstance(packet, (type, _OpProxy)):
                        wrap_packet(namespace, name, packet)
        original_getattr = vars(namespace_class)["__getattr__"]

        def namespace_getattr(namespace, name):
            packet = original_getattr(namespace, name)
            if name.startswith("_") or getattr(namespace, "name", None) in _SKIP_OP_NAMESPACES or not callable(packet):
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
            wrapper = by_id[id(orig)] = _make_wrapper(orig, name, qualname, self.switch)
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
        _set_sq_item(Tensor, getattr(self, "_sq_item", None))
        self.installed = False


def _make_script_call(orig_call: Callable, switch: _Switch) -> Callable:
    """`ScriptFunction.__call__`: one op named after the scripted function."""
    def call(fn, *args, **kwargs):
        s = switch.session
        if s is None or s.paused:
            return orig_call(fn, *args, **kwargs)
        name = getattr(fn, "name", "script")
        qualname = f"torch.jit.{getattr(fn, 'qualified_name', name)}"
        return _make_wrapper(functools.partial(orig_call, fn), name, qualname, switch)(*args, **kwargs)

    call._tl_wrapper = True  # type: ignore[attr-defined]
    return call


# -- the sequence slot of torch.Tensor ---------------------------------------------------------------
#
# Setting a Python `__getitem__` on torch.Tensor (our wrapper) makes CPython fill the type's
# sequence slot `sq_item` too, and deleting it again does not clear it: from then on every tensor
# passes PySequence_Check, and torch.tensor([t0, t1]) with 0-d tensors calls len() on them and
# raises "len() of a 0-d tensor". Indexing goes through the mapping slot, so the sequence slot can
# be put back as it was, which only ctypes can do.

class _SequenceMethods(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "sq_length", "sq_concat", "sq_repeat", "sq_item", "was_sq_slice", "sq_ass_item", "was_sq_ass_slice",
        "sq_contains", "sq_inplace_concat", "sq_inplace_repeat")]


# PyTypeObject: ob_refcnt, ob_type, ob_size, then tp_name, tp_basicsize, tp_itemsize, tp_dealloc,
# tp_vectorcall_offset, tp_getattr, tp_setattr, tp_as_async, tp_repr, tp_as_number, tp_as_sequence
_AS_SEQUENCE = ctypes.sizeof(ctypes.c_ssize_t) * 3 + ctypes.sizeof(ctypes.c_void_p) * 10


def _sequence_methods(cls: type) -> Optional[_SequenceMethods]:
    if sys.implementation.name != "cpython" or not _layout_as_expected(cls):
        return None
    address = ctypes.c_void_p.from_address(id(cls) + _AS_SEQUENCE).value
    return _SequenceMethods.from_address(address) if address else None


def _layout_as_expected(cls: type) -> bool:
    """The type object starts as assumed (not a free-threaded or debug build): its tp_name, right
    after the object header, is the class's name."""
    try:
        name = ctypes.c_char_p.from_address(id(cls) + ctypes.sizeof(ctypes.c_ssize_t) * 3).value
    except (ValueError, OSError):
        return False
    return name is not None and name.decode(errors="replace").split(".")[-1] == cls.__name__


def _sq_item(cls: type) -> Optional[int]:
    methods = _sequence_methods(cls)
    return methods.sq_item if methods is not None else None


def _set_sq_item(cls: type, value: Optional[int]) -> None:
    methods = _sequence_methods(cls)
    if methods is not None:
        methods.sq_item = value


def _make_function_apply(orig_apply: Any, switch: _Switch) -> classmethod:
    """Custom autograd Functions (`MyFn.apply(x)`): recorded under the Function's class name, unless
    the ops inside its forward already produced the outputs (then those are what is recorded)."""

    def apply(cls, *args, **kwargs):
        bound = orig_apply.__get__(None, cls)
        return _make_wrapper(bound, cls.__name__, f"{cls.__module__}.{cls.__qualname__}.apply", switch)(*args, **kwargs)

    return classmethod(apply)


def _make_module_call(orig_call: Callable, switch: _Switch) -> Callable:
    def module_call(mod, *args, **kwargs):
        s = switch.session
        if s is None or s.paused:
            return orig_call(mod, *args, **kwargs)
        s.paused += 1
        entry = s.enter_module(mod, args, kwargs)
        s.paused -= 1
        try:
            out = orig_call(mod, *args, **kwargs)
        except BaseException:
            s.pop_module()
            raise
        s.paused += 1
        try:
            s.exit_module(mod, entry, out)
        finally:
            s.paused -= 1
        return out

    module_call._tl_wrapper = True  # type: ignore[attr-defined]
    return module_call


def run_captured(wrappers: Wrappers, session: CaptureSession, model: nn.Module, args: tuple,
                 kwargs: Dict[str, Any], grad: bool = True) -> Tuple[Any, float]:
    """One forward pass under capture, with autograd on or off as the user's own forward would
    run (`grad`). Returns (output, forward seconds)."""
    session.add_inputs(args, kwargs)
    profile_path = os.environ.get("TORCHLENS_AGENT_PROFILE")  # cProfile of the captured forward
    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
    wrappers.switch.session = session
    # Everything alive now (torch, the model, the inputs) lives through the forward pass: moved out
    # of the collector's generations, the collections that the records' allocations trigger do not
    # walk it again and again (about 40% of the per-op cost on small-op models).
    gc.freeze()
    t0 = time.perf_counter()
    try:
        if profiler is not None:
            profiler.enable()
        with torch.set_grad_enabled(grad), eager_forward():  # torch.compile'd code runs op by op
            out = model(*args, **kwargs)
    finally:
        if profiler is not None:
            profiler.disable()
        wrappers.switch.session = None
        gc.unfreeze()
    elapsed = time.perf_counter() - t0
    if profiler is not None and profile_path:
        profiler.dump_stats(profile_path)
    return out, elapsed
