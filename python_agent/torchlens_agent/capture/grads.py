"""Gradients (docs/gradients.md): the target of the backward pass, the inputs made to require
gradients, and the hooks that stream each watched pass's gradient as the backward pass makes it.

A pass's gradient is taken at the autograd node that made the pass's version of the tensor (its
`grad_fn` and `output_nr` when the pass was recorded), so a tensor changed in place later keeps,
for each of its passes, the gradient of that version. torch 2 calls a node's pre-hook with the
gradients of its outputs before the node runs; torch 1.13 has only post-hooks, which see the same
gradients (the engine hands the node a copy of the list when post-hooks exist).
"""

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..dtypes import dtype_name
from ..errors import UserError
from ..walk import map_tensors, tensors_in_order
from .arrays import shape_of, tensor_bytes

_PHASE = "grads"


def differentiable(t: Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def inputs_requiring_grad(args: tuple, kwargs: Dict[str, Any]) -> Tuple[tuple, Dict[str, Any], List[Tensor]]:
    """The inputs with every floating-point tensor made to require gradients: a leaf kept here and
    a copy of it (a non-leaf) given to the model, which may change its inputs in place. Returns
    the new (args, kwargs) and the leaves."""
    leaves: List[Tensor] = []

    def lift(t: Tensor) -> Tensor:
        if not differentiable(t) or t.requires_grad:
            return t
        leaf = t.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()

    with torch.enable_grad():
        new_args, new_kwargs = map_tensors((args, kwargs), lift)
    return tuple(new_args), dict(new_kwargs), leaves


def _scalar(value: Any, what: str, hint: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise UserError(_PHASE, f"{what} is a {type(value).__name__}, not a tensor", hint)
    if value.numel() != 1:
        raise UserError(_PHASE, f"{what} has shape {list(value.shape)}: a gradient target must be one number", hint)
    if not value.is_floating_point():
        kind = "complex: a gradient target must be a real number" if value.is_complex() else "not differentiable"
        raise UserError(_PHASE, f"{what} is of dtype {dtype_name(value.dtype)}, {kind}",
                        "choose a floating-point output, or give --loss returning a real scalar (.abs() or .real of a complex one)")
    if not value.requires_grad:
        raise UserError(_PHASE, f"{what} does not depend on anything differentiable (it does not require grad)",
                        "make sure the forward pass does not detach its output or run under torch.no_grad()")
    return value.reshape(())


def _total(t: Tensor) -> Tensor:
    """The sum of a floating-point output's elements as a float32 (or wider) scalar: half-precision
    sums would overflow, and sparse tensors have their own sum."""
    if t.layout == torch.sparse_coo:
        t = torch.sparse.sum(t)
    elif t.layout != torch.strided:
        t = t.to_dense()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.sum()


def target_of(spec: Dict[str, Any], module: Any, out: Any, args: tuple, kwargs: Dict[str, Any]) -> Tensor:
    """The scalar the backward pass starts from (spec: the request's `grads.target`)."""
    kind = spec.get("kind", "sum")
    outputs = tensors_in_order(out)
    if kind == "sum":
        parts = [_total(o) for o in outputs if o.is_floating_point() and o.requires_grad]
        if not parts:
            why = "it returned no tensor" if not outputs else \
                "no output is a floating-point tensor that depends on the inputs or parameters"
            # complex outputs are left out of the sum: a gradient target is a real number
            raise UserError(_PHASE, f"the model has no differentiable output to take gradients of: {why}",
                            "return a floating-point tensor computed with autograd on, or give --loss")
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total
    if kind == "index":
        k = int(spec["output"])
        if not 1 <= k <= len(outputs):
            raise UserError(_PHASE, f"--target names output_{k}, but the model returned {len(outputs)} tensor(s)",
                            f"name one of output_1 ... output_{len(outputs)}")
        o = outputs[k - 1]
        index = tuple(int(i) for i in spec.get("index") or [])
        if len(index) > o.dim():
            raise UserError(_PHASE, f"--target indexes output_{k} with {len(index)} numbers, but it has "
                            f"{o.dim()} dimensions (shape {list(o.shape)})",
                            "give one index per dimension, e.g. 'output_1[0, 207]'")
        for axis, (i, n) in enumerate(zip(index, o.shape)):
            if not -n <= i < n:
                raise UserError(_PHASE, f"--target index {i} is out of range for dimension {axis} of output_{k} "
                                f"(size {n})", f"give an index in {-n} .. {n - 1}")
        return _scalar(o[index] if index else o, f"--target output_{k}{list(index) if index else ''}",
                       f"index every dimension of output_{k} (shape {list(o.shape)}) to pick one element")
    if kind == "loss":
        name = str(spec["function"])
        fn = getattr(module, name, None)
        if not callable(fn):
            raise UserError(_PHASE, f"--loss {name}: the model file defines no function {name!r}",
                            f"define {name}(output, *inputs) in the model file, returning a scalar tensor")
        value = fn(out, *args, **kwargs)
        return _scalar(value, f"--loss {name}(...) returned a value that", "return a scalar tensor, e.g. loss.mean()")
    raise UserError(_PHASE, f"unknown gradient target kind {kind!r}")


class GradWatch:
    """Hooks on the autograd nodes of the watched passes; each gradient is sent (`grad` frame and
    its bytes) as soon as the backward pass makes it, nothing kept — but for the passes around an
    in-place write through a view (`view_write`), whose gradients autograd never hands to a node of
    their own: those are made from the write's CopySlices node and sent at the end (`finish`)."""

    def __init__(self, wire) -> None:
        self.wire = wire
        self.handles: Dict[int, List[Any]] = {}
        self._prehooks: Optional[bool] = None
        self.selected: set = set()  # passes whose gradient is wanted (the save plan's)
        self.watched: set = set()  # ... and whose node (or leaf) is hooked
        # pass id -> the parts of its gradient, summed and sent by `finish` (a view written in place)
        self._parts: Dict[int, List[Tensor]] = {}
        self._derived: set = set()  # passes whose own hooks are ignored: their gradient is made otherwise
        # the backward pass of GPU tensors runs hooks on the autograd engine's device threads (one
        # per device): one frame and its bytes at a time on the wire
        self._lock = threading.Lock()

    # -- watching ------------------------------------------------------------------------------

    def watch(self, t: Tensor, pid: int) -> None:
        """Send t's gradient as pass `pid`'s, t as it is now (the pass is selected)."""
        self.selected.add(pid)
        if not t.requires_grad:
            return  # unless it gets an autograd node later (`rewatch`)
        self.watched.add(pid)
        node = t.grad_fn
        if node is None:  # a leaf (an input made to require grad): its gradient is its own
            self._hold(pid, t.register_hook(lambda g: self.send(pid, g)))
            return
        index = t.output_nr
        if self._prehooks is None:
            self._prehooks = hasattr(node, "register_prehook")
        if self._prehooks:
            self._hold(pid, node.register_prehook(lambda grads: self._at(pid, grads, index)))
        else:
            self._hold(pid, node.register_hook(lambda grads_in, grads_out: self._at(pid, grads_out, index)))

    def rewatch(self, t: Tensor, pid: int) -> None:
        """A call returned an already recorded tensor that has an autograd node now and had none
        when recorded: a custom autograd Function's `apply` gives the tensors its forward made (under
        no_grad) its own backward node. The pass's gradient is that node's."""
        if pid in self.selected and pid not in self.watched and t.requires_grad:
            self.watch(t, pid)

    def _hold(self, pid: int, handle: Any) -> None:
        self.handles.setdefault(pid, []).append(handle)

    def _at(self, pid: int, grads: Any, index: int) -> None:
        if index < len(grads):
            self.send(pid, grads[index])

    def output_alias(self, t: Tensor) -> Tensor:
        """A stand-in for an output tensor that the target is computed from: its node's gradient
        is the target's with respect to the output itself, without the gradient the same tensor
        gets from its uses inside the model (those are its op pass's)."""
        if not t.requires_grad:
            return t
        try:
            return t.view_as(t)
        except RuntimeError:  # layouts without views (sparse)
            return t.clone()

    def view_write(self, view: Tensor, base: Tensor, before: Optional[int], write: int, base_pass: int) -> None:
        """An in-place op wrote through `view` (pass `write`; `before` the pass the view was)
        into `base` (now pass `base_pass`). Autograd folds the op into one CopySlices node on the
        base, so neither the write's node nor the old view's ever sees the write's gradient:
        - `write` is the view's region of the base after the write, so its gradient is that region
          of the gradient CopySlices receives;
        - `before` gets what its own node receives (uses before the write) plus that region of the
          gradient CopySlices passes on to the base before the write (the op's vector-Jacobian
          product with respect to its input)."""
        node = base.grad_fn
        if node is None or not base.requires_grad:
            return
        geometry = (list(view.size()), list(view.stride()), view.storage_offset() - base.storage_offset(),
                    list(base.size()), list(base.stride()))
        index = base.output_nr
        if write in self.selected:
            self._derived.add(write)
            for h in self.handles.pop(write, []):
                h.remove()

            def after(grads: Any) -> None:
                if index < len(grads) and grads[index] is not None:
                    self._send_now(write, _region(grads[index], geometry))

            if self._prehooks is None:
                self._prehooks = hasattr(node, "register_prehook")
            if self._prehooks:
                self._hold(write, node.register_prehook(after))
            else:
                self._hold(write, node.register_hook(lambda grads_in, grads_out: after(grads_out)))
        if before is not None and before in self.selected and before not in self._derived:
            self._parts.setdefault(before, [])

            def into_before(grads_in: Any, grads_out: Any) -> None:
                if grads_in and grads_in[0] is not None:
                    self._parts[before].append(_region(grads_in[0], geometry).detach().clone())

            self._hold(before, node.register_hook(into_before))

    # -- sending ---------------------------------------------------------------------------------

    def send(self, pid: int, grad: Optional[Tensor], param: Optional[str] = None) -> None:
        """One gradient as its node's hook hands it over (None: an output of the node the target
        does not depend on)."""
        if grad is None or pid in self._derived:
            return
        if pid in self._parts:
            self._parts[pid].append(grad.detach().clone())
            return
        self._send_now(pid, grad, param)

    def _send_now(self, pid: int, grad: Tensor, param: Optional[str] = None) -> None:
        """One gradient, framed like a pass's bytes (docs/gradients.md, "Wire")."""
        with self._lock:
            arr, _ = tensor_bytes(grad)
            frame: Dict[str, Any] = {"type": "grad", "id": pid, "shape": shape_of(grad),
                                     "dtype": dtype_name(grad.dtype), "stored_dtype": arr.dtype.str,
                                     "stored_nbytes": arr.nbytes, "norm": l2_norm(arr)}
            if param is not None:
                frame["param"] = param
            self.wire.send(frame)
            if arr.nbytes:
                self.wire.send_data(pid, memoryview(arr.reshape(-1).view(np.uint8).data), owned=False)

    def finish(self) -> None:
        """After the backward pass: the gradients made of parts (see `view_write`)."""
        for pid, parts in self._parts.items():
            if parts:
                total = parts[0]
                for part in parts[1:]:
                    total = total + part
                self._send_now(pid, total)
        self._parts.clear()

    def close(self) -> None:
        for handles in self.handles.values():
            for h in handles:
                h.remove()
        self.handles.clear()


def _region(grad: Tensor, geometry: Tuple[List[int], List[int], int, List[int], List[int]]) -> Tensor:
    """The part of a gradient with respect to a base tensor that a view of it covers: laid out
    with the base's strides, then viewed with the view's size, strides and offset."""
    size, stride, offset, base_size, base_stride = geometry
    full = torch.empty_strided(base_size, base_stride, dtype=grad.dtype, device=grad.device)
    full.copy_(grad)
    return full.as_strided(size, stride, offset)


_NORM_CHUNK = 1 << 20  # elements converted to float64 at a time: the norm of a large gradient needs no copy of it


def l2_norm(arr: np.ndarray) -> Optional[float]:
    """The L2 norm of a gradient as stored (tensor_bytes's array: dense, on the CPU), its squares
    summed in float64 a chunk at a time (complex: of the magnitudes); None when not finite."""
    flat = arr.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _NORM_CHUNK):
        chunk = flat[start:start + _NORM_CHUNK]
        chunk = (np.abs(chunk) if chunk.dtype.kind == "c" else chunk).astype(np.float64)
        total += float(np.dot(chunk, chunk))
    value = math.sqrt(total) if math.isfinite(total) else total
    return value if math.isfinite(value) else None


def run_backward(watch: GradWatch, target: Tensor, model: nn.Module, params: bool) -> Dict[str, Any]:
    """The backward pass from `target`, the watched gradients sent as they come; with `params`, the
    parameters' gradients after it (ids -1, -2, ... in named_parameters order). The parameters'
    `.grad` are put back as they were. Returns what `done` adds."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    before = {id(p): p.grad for _, p in named}
    for _, p in named:
        p.grad = None
    t0 = time.perf_counter()
    try:
        torch.autograd.backward(target)
        watch.finish()
        if params:
            for k, (name, p) in enumerate(named, 1):
                if p.grad is not None:
                    watch._send_now(-k, p.grad, param=name)
    finally:
        for _, p in named:
            p.grad = before[id(p)]
        watch.close()
    value = float(target.detach())
    return {"backward_ms": (time.perf_counter() - t0) * 1000.0, "target_value": value if math.isfinite(value) else None}
