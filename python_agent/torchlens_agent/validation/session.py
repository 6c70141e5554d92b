"""The validation session: a capture whose passes are checked against the saved run instead of sent.

It overrides CaptureSession's two hooks: `dispatch` keeps what a replay of the call needs, and
`send_pass` replays the op from its parents' saved arrays, compares the result with the saved
array, perturbs each parent (the dependence check) and sends a `verdict`. Sources are checked
against the live tensors. With a run's gradients (grads.py), each replayed op's vector-Jacobian
product with its saved gradient is taken too, and summed per parent.
"""

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..capture.arrays import tensor_bytes
from ..capture.ops import VIEW_WRITE
from ..capture.session import CaptureSession
from ..walk import get_at, iter_tensors, tensors_in_order
from .arguments import at_position, fresh, substitute
from .arrays import RunArrays, tensor_like
from .compare import any_changed, compare, identical
from .exemptions import EXEMPT, UNINITIALIZED, exemption, remainder_by_one, zero_parameters
from .grads import GradientCheck
from .isolation import foreign, isolated
from .perturb import more_perturbations, perturbed
from .rng import rng_equal, rng_state, set_rng_state


class ValidationSession(CaptureSession):
    """A capture that checks each pass against the saved run instead of sending it."""

    def __init__(self, wire, model, expected: List[Dict[str, Any]], arrays: RunArrays, check_dependence: bool = True,
                 max_repr: int = 64, gradients: Optional[Dict[str, Any]] = None):
        super().__init__(wire, model, save="none", max_repr=max_repr)
        self.expected = {e["id"]: e for e in expected}
        self.arrays = arrays
        self.check_dependence = check_dependence
        self._ctx: Optional[Tuple[Callable, tuple, Dict[str, Any], Any]] = None
        self._gen = torch.Generator().manual_seed(1234)
        self._params = {address: p for address, p in model.named_parameters()}
        self.counts = {"passed": 0, "failed": 0, "exempt": 0}
        # with the run's gradients (the request's `gradients`): the per-pass gradient replay, and
        # for the call being checked its grad mode and which arguments required gradients before it
        # (`self.grads` is capture's own, the hooks extract streams gradients with)
        self.gradcheck: Optional[GradientCheck] = GradientCheck(gradients, self.expected) if gradients else None
        self._grad_ctx: Optional[Tuple[bool, Dict[int, bool]]] = None
        self._last_op: Optional[Tuple[int, Tensor]] = None  # the op pass sent last: a view_write's view

    # -- the hooks of CaptureSession ------------------------------------------------------------------

    def dispatch(self, orig: Callable, func: str, qualname: str, args: tuple, kwargs: Dict[str, Any]) -> Any:
        """The call as capture records it, with what a replay of it needs (the original, its
        arguments, the RNG state before it) kept while its passes are checked."""
        first_new_id = self.next_id
        rng = rng_state()
        grad_ctx = None
        if self.gradcheck is not None:
            grad_ctx = (torch.is_grad_enabled(), {id(t): t.requires_grad for _, t in iter_tensors((args, kwargs))})
        t0 = time.perf_counter()
        out = orig(*args, **kwargs)
        elapsed = time.perf_counter() - t0
        self._ctx = (orig, args, kwargs, rng)
        self._grad_ctx = grad_ctx
        try:
            self.on_call(func, qualname, args, kwargs, out, first_new_id, elapsed)
        finally:
            self._ctx = None
            self._grad_ctx = None
        return out

    def send_pass(self, t: Tensor, record: Dict[str, Any]) -> None:
        """Check the pass against the saved run and send its verdict (instead of the record)."""
        pid = record["id"]
        verdict: Dict[str, Any] = {"type": "verdict", "id": pid, "func": record["func"], "status": "passed",
                                   "reason": None, "max_abs_err": None, "at": None, "compared_with": None,
                                   "random": False, "dependence": []}
        expected = self.expected.get(pid)
        if expected is None or expected["func"] != record["func"] or expected["shape"] != record["shape"] \
                or expected["dtype"] != record["dtype"]:
            what = "nothing" if expected is None else f"{expected['func']}{expected['shape']} {expected['dtype']}"
            verdict.update(status="failed", reason=f"the forward pass differs from the saved run here: it made "
                           f"{record['func']}{record['shape']} {record['dtype']} where the run has {what}")
            return self._send(verdict)
        live_parents = [pid for pid, _ in record["parents"]]
        if "parents" in expected and expected["parents"] != live_parents:
            verdict.update(status="failed", reason=f"the run records parents {expected['parents']} (pass ids) but the "
                           f"forward pass gives {live_parents}: the log's edges are wrong")
            return self._send(verdict)
        gradcheck = self.gradcheck
        if gradcheck is not None:
            gradcheck.note(record, t, self._grad_ctx[0] if self._grad_ctx is not None else torch.is_grad_enabled())
        if record["func"] in UNINITIALIZED:
            verdict.update(status="exempt", reason=EXEMPT["uninitialized"][0])
        elif record["func"] == VIEW_WRITE or record["kind"] not in ("op", "internal") or self._ctx is None:
            self._check_source(t, expected, verdict)
            if gradcheck is not None and record["func"] == VIEW_WRITE:
                self._view_write_vjp(t, record)
        else:
            self._check_op(t, record, expected, verdict)
        if gradcheck is not None and record["kind"] in ("op", "internal"):
            self._last_op = (pid, t)
        self._send(verdict)

    def _send(self, verdict: Dict[str, Any]) -> None:
        self.counts[verdict["status"]] = self.counts.get(verdict["status"], 0) + 1
        self.wire.send(verdict)

    def _saved(self, expected: Dict[str, Any]) -> Optional[np.ndarray]:
        return self.arrays.get(expected["array"]) if expected.get("array") else None

    def _check_source(self, live: Tensor, expected: Dict[str, Any], verdict: Dict[str, Any]) -> None:
        """Inputs, buffers, constants, outputs: the saved array must be the live value."""
        saved = self._saved(expected)
        if saved is None:
            verdict.update(status="exempt", reason="not saved (--layers)", compared_with=None)
            return
        got, _ = tensor_bytes(live)
        result = compare(got, saved, expected["dtype"])
        verdict.update(compared_with="live", max_abs_err=result.get("max_abs_err"), at=result.get("at"))
        if not result["ok"]:
            verdict.update(status="failed", reason=f"saved array differs from the live value: {result['reason']}")

    def _tensor_for(self, parent_id: int, live: Tensor) -> Tensor:
        """The parent's saved array as a tensor like the live one (dtype, device), or the live value."""
        expected = self.expected.get(parent_id)
        saved = self._saved(expected) if expected else None
        if live.is_nested:  # saved zero-padded: the live value is the only nested one there is
            return live
        if saved is None:
            return fresh(live.detach())
        return tensor_like(saved, live)

    def _check_op(self, live: Tensor, record: Dict[str, Any], expected: Dict[str, Any], verdict: Dict[str, Any]) -> None:
        orig, args, kwargs, rng_before = self._ctx  # type: ignore[misc]
        random = rng_before is not None and not rng_equal(rng_before, rng_state())
        verdict["random"] = random
        parents: Dict[str, Tensor] = {}
        for pid, pos in record["parents"]:
            live_parent = at_position(args, kwargs, pos)
            parents[pos] = self._tensor_for(pid, live_parent)

        def replay(replacements: Dict[str, Tensor]) -> Any:
            r_args, r_kwargs = substitute(args, kwargs, replacements)
            if random:
                after = rng_state()
                set_rng_state(rng_before)
                try:
                    out = orig(*r_args, **r_kwargs)
                finally:
                    set_rng_state(after)
            else:
                out = orig(*r_args, **r_kwargs)
            if out is None and record["inplace"] and r_args:
                out = r_args[0]  # __setitem__ returns None; its result is the mutated tensor
            return out

        try:
            with torch.no_grad():
                out = replay({k: fresh(v) for k, v in parents.items()})
        except Exception as exc:  # noqa: BLE001 - a replay that raises is a failed check, reported as such
            verdict.update(status="failed", reason=f"replay raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        replayed = get_at(out, record["out_index"]) if record["out_index"] is not None else out
        if not isinstance(replayed, Tensor):
            verdict.update(status="failed", reason=f"replay returned {type(replayed).__name__}, not a tensor")
            return
        got, _ = tensor_bytes(replayed)
        saved = self._saved(expected)
        if saved is None:
            want, _ = tensor_bytes(live)
            verdict["compared_with"] = "live"
        else:
            want = saved
            verdict["compared_with"] = "saved"
        result = compare(got, want, expected["dtype"])
        verdict.update(max_abs_err=result.get("max_abs_err"), at=result.get("at"))
        if not result["ok"]:
            source = "saved array" if saved is not None else "live value"
            verdict.update(status="failed", reason=f"replay differs from the {source}: {result['reason']}")
            return
        if self.gradcheck is not None and self.gradcheck.pending(record["id"]):
            grad_ctx = self._grad_ctx
            before = grad_ctx[1] if grad_ctx is not None else {}

            def argument(pos: str) -> Tuple[Tensor, bool]:
                live_arg = at_position(args, kwargs, pos)
                return live_arg, before.get(id(live_arg), live_arg.requires_grad)

            self.gradcheck.vjp(record, parents, replay, live, argument)
        if self.check_dependence:
            self._check_dependence(record, parents, replay, got, expected["dtype"], verdict,
                                   tensors_in_order(out) if record["out_index"] is not None else None)

    def _view_write_vjp(self, base: Tensor, record: Dict[str, Any]) -> None:
        """A view written in place: its gradient to the write (the op pass just sent, whose tensor
        is the view) and to the base before it."""
        assert self.gradcheck is not None
        last = self._last_op
        by = record["parents"][1][0] if len(record["parents"]) > 1 else None
        view = last[1] if last is not None and last[0] == by else None
        before = self._grad_ctx[1] if self._grad_ctx is not None else {}
        # the base required gradients before the write if the view did (a view shares its base's)
        before_rg = before.get(id(view), False) if view is not None else False
        self.gradcheck.view_write(record, base, view, before_rg)

    def _check_dependence(self, record, parents, replay, reference: np.ndarray, dtype: str, verdict,
                          full_reference: Optional[List[Tensor]] = None) -> None:
        checks = verdict["dependence"]
        other_output: set = set()  # parents that moved another output of the same call
        if reference.size == 0:  # nothing to change: an empty output depends on nothing's values
            checks.extend({"parent": pid, "position": pos, "status": "exempt", "rule": "empty"} for pid, pos in record["parents"])
            return
        seen = set()
        for pid, pos in record["parents"]:
            if pid in seen:
                continue
            seen.add(pid)
            rule = exemption(record["func"], pos, None)
            if rule:
                checks.append({"parent": pid, "position": pos, "status": "exempt", "rule": rule})
                continue
            moved = perturbed(parents[pos], self._gen)
            if moved is None:
                rule = "empty" if parents[pos].numel() == 0 else "unperturbable"
                checks.append({"parent": pid, "position": pos, "status": "exempt", "rule": rule})
                continue
            def attempt(pid: int = pid, values: Tensor = moved) -> bool:
                replacements = {k: fresh(v) for k, v in parents.items()}
                for other_pid, other_pos in record["parents"]:
                    if other_pid == pid:
                        replacements[other_pos] = fresh(values)
                try:
                    with torch.no_grad():
                        out = replay(replacements)
                    changed_t = get_at(out, record["out_index"]) if record["out_index"] is not None else out
                    got, _ = tensor_bytes(changed_t)
                    if not identical(got, reference):
                        return True
                    if full_reference is not None and any_changed(out, full_reference):
                        other_output.add(pid)
                    return False
                except Exception:  # noqa: BLE001 - the op reads this argument's values: it raised on others
                    return True

            # Kernels from extensions (torchvision's roi_align, ...) may not check their inputs: a
            # perturbed box whose batch index is out of range crashes the process. Those replay in a
            # forked child; a child that dies counts as a change (it read the values).
            def run(candidate: Tensor, in_child: bool = foreign(record)) -> bool:
                return isolated(lambda: attempt(values=candidate)) if in_child else attempt(values=candidate)

            changed = run(moved)
            if not changed and parents[pos].is_floating_point():
                # Values of another sign or size: an op defined on part of the line (log, sqrt of
                # negatives) or saturating (tanh of large values) may ignore one shift but not all.
                changed = any(run(other) for other in more_perturbations(parents[pos], self._gen))
            if changed:
                checks.append({"parent": pid, "position": pos, "status": "changed", "rule": None})
                continue
            rule = exemption(record["func"], pos, False) or zero_parameters(record, self._params) or \
                remainder_by_one(record, pos) or \
                ("quantized" if parents[pos].is_quantized else None) or \
                ("other-output" if pid in other_output else None) or \
                ("non-finite" if reference.dtype.kind in "fc" and not np.isfinite(reference).any() else None)
            if rule:
                checks.append({"parent": pid, "position": pos, "status": "exempt", "rule": rule})
            else:
                checks.append({"parent": pid, "position": pos, "status": "unchanged", "rule": None})
                verdict.update(status="failed", reason=f"perturbing parent {pid} (argument {pos}) did not change this "
                               f"pass: the recorded edge may be wrong")
