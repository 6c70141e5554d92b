"""Validating a run's gradients (docs/gradients.md, "Validation").

Two checks, both against the run's gradients.npz:

- ground truth (`plain_backward`): a plain forward and backward pass, no wrappers, from the
  inputs made to require gradients as extract made them: the inputs' gradients must be the saved
  gradients of the input passes, and each saved parameter gradient the parameter's `.grad`;
- replay (`GradientCheck`): during the validation session's forward pass, each op whose output
  required gradients is run again on its parents' saved arrays as leaves, and the vector-Jacobian
  product with the op's saved gradient taken (`torch.autograd.grad`); each parent's products are
  summed. Output passes are the identity on their parent; their own gradient comes from replaying
  the target on the saved outputs. A pass whose every child's gradient was recorded must have the
  sum as its saved gradient (or, with no gradient recorded, get nothing but zeros); a pass with a
  child whose gradient was not recorded (`--layers`) is exempt, named as such.

Children's contributions are summed in float64, so the sum differs from autograd's in the last
bits only; compare()'s tolerance (relative, per dtype) covers that.
"""

import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..capture.arrays import tensor_bytes
from ..capture.grads import differentiable, target_of
from ..walk import get_at, iter_tensors, map_tensors
from .arguments import fresh
from .arrays import RunArrays, tensor_like
from .compare import compare

# a child's contribution to its parents' gradients, as far as the replay got
_PENDING = "pending"  # its vector-Jacobian product is still to be taken (its op's replay)
_DONE = "done"  # taken, and added to its parents' sums
_ZERO = "zero"  # nothing: the target does not depend on it, or no autograd path runs through it
_UNKNOWN = "unknown"  # not recorded (--layers): its parents cannot be checked (reason given)
_ERROR = "error"  # taking it raised: its parents fail (reason given)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _leaf_from(t: Tensor) -> Tensor:
    """A leaf that requires gradients, with t's values."""
    return t.detach().clone().requires_grad_(True)


def _can_lead(t: Tensor) -> bool:
    """t may stand in a replay as a leaf that requires gradients."""
    return isinstance(t, Tensor) and differentiable(t) and not t.is_quantized and not t.is_nested \
        and t.layout == torch.strided


def _layout_of(value: Tensor, live: Tensor) -> Tensor:
    """A saved (dense) value in the live tensor's sparse layout, where it has one: autograd's
    gradients of a sparse tensor keep to its pattern, and a replay must meet the same."""
    if live.layout == torch.sparse_coo and value.layout == torch.strided:
        return value.to_sparse(live.sparse_dim())
    if live.layout == torch.sparse_csr and value.layout == torch.strided:
        return value.to_sparse_csr()
    return value


class GradientCheck:
    """The per-pass gradient replay: what the run saved (the request's expected passes' `grad`),
    each pass's children as the forward pass makes them, and the sum of the children's
    vector-Jacobian products per pass."""

    def __init__(self, request: Dict[str, Any], expected: Dict[int, Dict[str, Any]]):
        self.spec: Dict[str, Any] = request.get("target") or {"kind": "sum"}
        self.arrays = RunArrays(request["file"], name="gradients.npz")
        self.status: Dict[int, Optional[str]] = {}  # None: not recorded; "none"; "saved"
        self.keys: Dict[int, str] = {}
        self.labels: Dict[int, str] = {}
        self.dtypes: Dict[int, str] = {}
        for pid, e in expected.items():
            g = e.get("grad")
            self.status[pid] = None if not g else g.get("status")
            if g and g.get("status") == "saved":
                self.keys[pid] = g["array"]
            self.dtypes[pid] = e.get("dtype", "")
        self.children: Dict[int, List[int]] = {}
        self.met: List[int] = []
        self.funcs: Dict[int, str] = {}
        self.state: Dict[int, Tuple[str, Optional[str]]] = {}
        self.sums: Dict[int, Tensor] = {}
        self.output_ids: List[int] = []
        self.target_error: Optional[str] = None
        # passes made without autograd (their contribution zero), to look at again once the
        # forward pass is over: one that requires gradients then was given its history later, as
        # a custom autograd.Function's forward does to what it returns
        self._made_without_grad: Dict[int, Any] = {}

    def close(self) -> None:
        self.arrays.close()

    # -- what the run saved --------------------------------------------------------------------------

    def saved(self, pid: int) -> Optional[np.ndarray]:
        key = self.keys.get(pid)
        return self.arrays.get(key) if key is not None else None

    def saved_tensor(self, pid: int, like: Tensor) -> Tensor:
        """The pass's saved gradient as a tensor like `like` (its dtype and device)."""
        arr = self.saved(pid)
        assert arr is not None
        return tensor_like(arr, like.detach())

    # -- the forward pass, pass by pass -----------------------------------------------------------------

    def note(self, record: Dict[str, Any], live: Tensor, grad_mode: bool) -> None:
        """A pass the forward pass made (and the run has): its edges, and what its contribution
        to its parents' gradients will be. `grad_mode`: whether its call ran with autograd on."""
        pid = record["id"]
        self.met.append(pid)
        self.funcs[pid] = record["func"]
        for parent in dict.fromkeys(p for p, _ in record["parents"]):
            self.children.setdefault(parent, []).append(pid)
        status = self.status.get(pid)
        if record["kind"] == "output":
            self.output_ids.append(pid)
            self._identity(record, live)
            return
        if not record["parents"]:
            self.state[pid] = (_ZERO, None)
            return
        if status == "none" or not (grad_mode and live.requires_grad):
            self.state[pid] = (_ZERO, None)  # no autograd path runs through it
            if not live.requires_grad:
                try:
                    self._made_without_grad[pid] = weakref.ref(live)
                except TypeError:
                    pass
        elif status is None:
            self.state[pid] = (_UNKNOWN, f"its child {record['func']} (pass {pid}) has no gradient recorded (--layers)")
        else:
            self.state[pid] = (_PENDING, None)

    def _identity(self, record: Dict[str, Any], live: Tensor) -> None:
        """An output pass hands its parent its own gradient."""
        pid = record["id"]
        status = self.status.get(pid)
        if status == "saved" and record["parents"]:
            try:
                self._add(record["parents"][0][0], self.saved_tensor(pid, live))
                self.state[pid] = (_DONE, None)
            except Exception as exc:  # noqa: BLE001 - a saved gradient that does not fit is reported
                self.state[pid] = (_ERROR, f"the saved gradient of output pass {pid} cannot be read: {_short(exc)}")
        elif status is None and record["parents"]:
            self.state[pid] = (_UNKNOWN, f"its output pass {pid} has no gradient recorded (--layers)")
        else:
            self.state[pid] = (_ZERO, None)

    def pending(self, pid: int) -> bool:
        return self.state.get(pid, (None,))[0] == _PENDING

    def _add(self, pid: int, g: Optional[Tensor]) -> None:
        if g is None:
            return
        g = g.detach()
        if g.layout != torch.strided:
            g = g.to_dense()
        g = g.to("cpu", torch.complex128 if g.is_complex() else torch.float64)
        have = self.sums.get(pid)
        if have is None:
            self.sums[pid] = g.clone()
        elif have.shape != g.shape:
            raise ValueError(f"a gradient of shape {list(g.shape)} for pass {pid} of shape {list(have.shape)}")
        else:
            have.add_(g)

    def vjp(self, record: Dict[str, Any], parents: Dict[str, Tensor], replay: Callable[[Dict[str, Tensor]], Any],
            live: Tensor, argument: Callable[[str], Tuple[Tensor, bool]]) -> None:
        """The op again on its parents' saved arrays as leaves, with autograd on, and the
        vector-Jacobian product with its saved gradient added to each parent's sum.
        `argument(position)`: the live argument there, and whether it required gradients before
        the call."""
        pid = record["id"]
        if not self.pending(pid):
            return
        try:
            leaves: List[Tuple[int, Tensor]] = []
            replacements: Dict[str, Tensor] = {}
            with torch.enable_grad():
                for parent, pos in record["parents"]:
                    value = parents[pos]
                    live_arg, required = argument(pos)
                    if required and _can_lead(value):
                        leaf = _layout_of(value.detach().clone(), live_arg).requires_grad_(True)
                        leaves.append((parent, leaf))
                        replacements[pos] = leaf.clone()  # an in-place op writes to the copy
                    else:
                        replacements[pos] = fresh(value)
                if not leaves:
                    self.state[pid] = (_ZERO, None)
                    return
                out = replay(replacements)
                y = get_at(out, record["out_index"]) if record["out_index"] is not None else out
                if not isinstance(y, Tensor) or not y.requires_grad:
                    self.state[pid] = (_ZERO, None)
                    return
                grad_out = _layout_of(self.saved_tensor(pid, y), y)
                grads = torch.autograd.grad(y, [leaf for _, leaf in leaves], grad_outputs=grad_out, allow_unused=True)
            for (parent, _), g in zip(leaves, grads):
                self._add(parent, g)
            self.state[pid] = (_DONE, None)
        except Exception as exc:  # noqa: BLE001 - reported on the parents, whose check it spoils
            self.state[pid] = (_ERROR, f"the vector-Jacobian product of its child {record['func']} (pass {pid}) "
                               f"could not be taken: {_short(exc)}")

    def view_write(self, record: Dict[str, Any], base: Tensor, view: Optional[Tensor], before_requires_grad: bool) -> None:
        """A view written in place (`view_write`: the base after the write, parents the base
        before and the write): its gradient goes to the write where the view lies, to the base
        before everywhere else."""
        pid = record["id"]
        if not self.pending(pid):
            return
        if view is None or len(record["parents"]) != 2:
            self.state[pid] = (_ERROR, f"its child view_write (pass {pid}) names no view to replay")
            return
        (before, _), (write, _) = record["parents"]
        try:
            grad = torch.empty_strided(tuple(base.shape), tuple(base.stride()), dtype=base.dtype, device=base.device)
            grad.copy_(self.saved_tensor(pid, base))
            offset = view.storage_offset() - base.storage_offset()
            region = grad.as_strided(tuple(view.shape), tuple(view.stride()), grad.storage_offset() + offset)
            if view.requires_grad:
                self._add(write, region.clone())
            if before_requires_grad:
                region.zero_()
                self._add(before, grad)
            self.state[pid] = (_DONE, None)
        except Exception as exc:  # noqa: BLE001
            self.state[pid] = (_ERROR, f"the vector-Jacobian product of its child view_write (pass {pid}) could not "
                               f"be taken: {_short(exc)}")

    def after_forward(self, tag_of: Callable[[Tensor], Optional[int]]) -> None:
        """Once the forward pass is over (its graph still alive): a pass made without autograd whose
        tensor requires gradients now, and is still that pass (no in-place op made it another),
        was given its history afterwards: it is a custom autograd.Function's output, and the
        Function's own backward, which no replay of the recorded ops reproduces, makes its
        parents' gradients."""
        for pid, ref in self._made_without_grad.items():
            t = ref()
            if t is not None and t.requires_grad and tag_of(t) == pid:
                self.state[pid] = (_UNKNOWN, f"its child {self.funcs.get(pid)} (pass {pid}) is the output of a custom "
                                   "autograd.Function, whose backward the replay of the recorded ops does not reproduce")
        self._made_without_grad.clear()

    # -- the target ----------------------------------------------------------------------------------

    def target(self, module: Any, out: Any, args: tuple, kwargs: Dict[str, Any], activations: RunArrays,
               arrays_of: Dict[int, Optional[str]], tag_of: Callable[[Tensor], Optional[int]]) -> None:
        """The target replayed on the saved outputs (leaves that require gradients where the live
        outputs did), and on the inputs the live forward pass left (a loss may read them): its
        gradient with respect to each output is that output pass's own; with respect to an input
        (or whatever pass an input's tensor is now), one more contribution to that pass."""
        leaves: List[Tuple[int, Tensor]] = []
        order = iter(self.output_ids)

        def output_leaf(t: Tensor) -> Tensor:
            pid = next(order, None)
            key = arrays_of.get(pid) if pid is not None else None
            value = tensor_like(activations.get(key), t) if key else t.detach().clone()
            if pid is None or not (t.requires_grad and _can_lead(value)):
                return value
            leaf = _layout_of(value, t).requires_grad_(True)
            leaves.append((pid, leaf))
            return leaf

        def input_leaf(t: Tensor) -> Tensor:
            pid = tag_of(t)
            if pid is None or not (t.requires_grad and _can_lead(t)):
                return t
            leaf = _leaf_from(t)
            leaves.append((pid, leaf))
            return leaf

        try:
            with torch.enable_grad():
                r_out = map_tensors(out, output_leaf)
                r_args, r_kwargs = map_tensors((args, kwargs), input_leaf)
                value = target_of(self.spec, module, r_out, tuple(r_args), dict(r_kwargs))
                grads = torch.autograd.grad(value, [leaf for _, leaf in leaves], allow_unused=True)
            for (pid, _), g in zip(leaves, grads):
                self._add(pid, g)
        except Exception as exc:  # noqa: BLE001 - reported on the output passes
            self.target_error = f"replaying the target on the saved outputs raised {_short(exc)}"

    # -- the verdicts ----------------------------------------------------------------------------------

    def finish(self) -> List[Dict[str, Any]]:
        """One verdict per pass met whose gradient the run records (saved or none), in pass order."""
        verdicts = []
        for pid in sorted(set(self.met)):
            status = self.status.get(pid)
            if status is None:
                continue
            verdicts.append(self._verdict(pid, status))
        return verdicts

    def _verdict(self, pid: int, status: str) -> Dict[str, Any]:
        v: Dict[str, Any] = {"id": pid, "func": self.funcs.get(pid), "grad": status, "status": "passed",
                             "reason": None, "max_abs_err": None, "at": None}
        if pid in self.output_ids and self.target_error:
            v.update(status="failed", reason=self.target_error)
            return v
        for child in self.children.get(pid, []):
            state, why = self.state.get(child, (_PENDING, None))
            if state == _ERROR:
                v.update(status="failed", reason=why)
                return v
            if state == _UNKNOWN:
                v.update(status="exempt", reason=why)
                return v
            if state == _PENDING:
                v.update(status="exempt", reason=f"its child {self.funcs.get(child)} (pass {child}) was not replayed "
                         "(its value replay failed)")
                return v
        total = self.sums.get(pid)
        dtype = self.dtypes.get(pid, "")
        if status == "none":
            if total is None:
                return v
            got = total.numpy()
            zeros = np.zeros_like(got)
            result = compare(got, zeros, dtype) if got.dtype.kind in "fc" else {"ok": not got.any()}
            v.update(max_abs_err=result.get("max_abs_err"), at=result.get("at"))
            if not result["ok"]:
                v.update(status="failed", reason="the run says the target does not depend on this pass, but its "
                         "children's gradients say it does")
            return v
        want = self.saved(pid)
        assert want is not None
        got = np.zeros(want.shape, want.dtype) if total is None else total.numpy()
        if got.shape != want.shape:
            v.update(status="failed", reason=f"its children's gradients sum to shape {list(got.shape)}, the saved "
                     f"gradient has shape {list(want.shape)}")
            return v
        result = compare(got.astype(want.dtype, copy=False), want, dtype)
        v.update(max_abs_err=result.get("max_abs_err"), at=result.get("at"))
        if not result["ok"]:
            what = "the target's gradient with respect to this output" if pid in self.output_ids else \
                "the sum of its children's replayed gradients"
            v.update(status="failed", reason=f"{what} differs from the saved gradient: {result['reason']}")
        return v


# -- ground truth -------------------------------------------------------------------------------------

def input_leaves(original: Tuple[tuple, Dict[str, Any]], lifted: Tuple[tuple, Dict[str, Any]],
                 leaves: List[Tensor]) -> List[Optional[Tensor]]:
    """For each input pass (the lifted inputs as capture meets them: args then kwargs, each tensor
    once), the leaf whose gradient is that input's: the one `inputs_requiring_grad` made for it, or
    the input itself where it already required gradients; None for one that has no gradient."""
    made = iter(leaves)
    pairs = list(zip(_tensors(original), _tensors(lifted)))
    seen = set()
    found: List[Optional[Tensor]] = []
    for orig, new in pairs:
        if id(new) in seen:
            continue
        seen.add(id(new))
        if new is not orig:
            found.append(next(made, None))
        else:
            found.append(new if new.requires_grad and new.is_leaf else None)
    return found


def _tensors(inputs: Tuple[tuple, Dict[str, Any]]) -> Iterable[Tensor]:
    args, kwargs = inputs
    return [t for _, t in iter_tensors(args, "args")] + [t for _, t in iter_tensors(kwargs, "kwargs")]


def plain_backward(model: nn.Module, module: Any, spec: Dict[str, Any], out: Any, args: tuple,
                   kwargs: Dict[str, Any], leaves: List[Optional[Tensor]], inputs: List[Dict[str, Any]],
                   params: List[Dict[str, Any]], arrays: RunArrays) -> List[Dict[str, Any]]:
    """The backward pass from the target of a plain forward pass's output `out`: the inputs'
    gradients (`leaves`, one per input pass, `inputs` their expected entries in order) and the
    parameters' (`params`: the run's saved parameter gradients, {address, array, dtype}) against
    the saved ones. The parameters' `.grad` are put back as they were."""
    checks: List[Dict[str, Any]] = []
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    before = {id(p): p.grad for _, p in named}
    for _, p in named:
        p.grad = None
    try:
        try:
            with torch.enable_grad():
                target = target_of(spec, module, out, args, kwargs)
                torch.autograd.backward(target)
        except Exception as exc:  # noqa: BLE001 - a plain pass whose target cannot be taken: every check fails
            why = f"the plain forward pass's target could not be taken: {_short(exc)}"
            checks.extend({"kind": "input", "id": e["id"], "param": None, "ok": False, "reason": why, "max_abs_err": None}
                          for e in inputs)
            checks.extend({"kind": "param", "id": None, "param": p["address"], "ok": False, "reason": why,
                           "max_abs_err": None} for p in params)
            return checks
        if len(leaves) != len(inputs):
            checks.append({"kind": "input", "id": None, "param": None, "ok": False, "max_abs_err": None,
                           "reason": f"the plain forward pass has {len(leaves)} inputs, the run {len(inputs)}"})
        for leaf, e in zip(leaves, inputs):
            g = e.get("grad")
            checks.append(_check_grad({"kind": "input", "id": e["id"], "param": None},
                                      None if leaf is None else leaf.grad, g, arrays, e.get("dtype", "")))
        by_name = dict(named)
        for p in params:
            live = by_name.get(p["address"])
            entry = {"kind": "param", "id": None, "param": p["address"]}
            if live is None:
                checks.append({**entry, "ok": False, "max_abs_err": None,
                               "reason": "the model has no parameter of that name that requires gradients"})
                continue
            checks.append(_check_grad(entry, live.grad, {"status": "saved", "array": p["array"]}, arrays,
                                      p.get("dtype", "")))
        if params:  # --param-grads: every parameter with a gradient is saved
            saved = {p["address"] for p in params}
            for name, p in named:
                if p.grad is not None and name not in saved:
                    checks.append({"kind": "param", "id": None, "param": name, "ok": False, "max_abs_err": None,
                                   "reason": "a plain backward pass gives this parameter a gradient, the run has none"})
        return checks
    finally:
        for _, p in named:
            p.grad = before[id(p)]


def _check_grad(entry: Dict[str, Any], got: Optional[Tensor], expected: Optional[Dict[str, Any]], arrays: RunArrays,
                dtype: str) -> Dict[str, Any]:
    entry = {**entry, "ok": False, "reason": None, "max_abs_err": None}
    if not expected:
        entry.update(ok=True, reason="not recorded (--layers)")
        return entry
    if expected.get("status") != "saved":
        if got is None:
            entry.update(ok=True)
        else:
            entry["reason"] = "a plain backward pass gives it a gradient, the run says the target does not depend on it"
        return entry
    if got is None:
        entry["reason"] = "a plain backward pass gives it no gradient, the run has one"
        return entry
    arr, _ = tensor_bytes(got)
    result = compare(arr, arrays.get(expected["array"]), dtype or str(arr.dtype))
    entry.update(ok=result["ok"], reason=result.get("reason"), max_abs_err=result.get("max_abs_err"))
    return entry


def summary(verdicts: List[Dict[str, Any]]) -> Dict[str, int]:
    counts = {"passed": 0, "failed": 0, "exempt": 0}
    for v in verdicts:
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    return counts


__all__ = ["GradientCheck", "input_leaves", "plain_backward", "summary"]
