"""The `validate` request: replay the forward pass against a saved run (validation/), check that the
capture saw every torch call (validation/completeness.py), then compare a plain forward pass's
outputs with the saved outputs. A run with gradients (the request's `gradients`) has them checked
too (validation/grads.py): replayed pass by pass, and against a plain backward pass."""

import copy
import time
from typing import Any, Dict, List, Tuple

import torch

from .capture.arrays import tensor_bytes
from .capture.grads import inputs_requiring_grad
from .capture.ops import NOT_OPS
from .capture.run import run_captured
from .load import seed_everything
from .request import Loaded, guarded
from .validation import completeness
from .validation.arrays import RunArrays
from .validation.compare import compare
from .validation.grads import input_leaves, plain_backward, summary
from .validation.session import ValidationSession
from .walk import tensors_in_order
from .wire import Wire


def _snapshot(state: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a state dict to restore later: tensors cloned (quantized and non-leaf ones too,
    which deepcopy refuses), other entries deep-copied where they allow it."""
    out: Dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and not value.is_quantized:
            out[key] = value.detach().clone()
        else:
            try:
                out[key] = copy.deepcopy(value)
            except Exception:  # noqa: BLE001 - packed parameters and the like: restored as they are
                out[key] = value
    return out


def _restore(model: torch.nn.Module, pristine: Dict[str, Any]) -> None:
    """Put back the parameters and buffers the captured pass changed (batch-norm statistics in
    training mode), in place: no load_state_dict, which some modules (quantized ones) reject."""
    with torch.no_grad():
        for key, value in model.state_dict(keep_vars=True).items():
            before = pristine.get(key)
            if isinstance(value, torch.Tensor) and isinstance(before, torch.Tensor) and not value.is_quantized:
                if value.shape == before.shape and not torch.equal(value, before):
                    value.copy_(before)


def validate(wire: Wire, request: Dict[str, Any]) -> int:
    wall0 = time.perf_counter()

    def body(loaded: Loaded, wrappers, stage: Dict[str, str]) -> None:
        stage["phase"] = "replay"
        arrays = RunArrays(request["npz"])
        expected: List[Dict[str, Any]] = request["expected"]
        outputs_expected: List[Dict[str, Any]] = request["outputs"]  # [{id, array, dtype}] in output order
        pristine = _snapshot(loaded.model.state_dict())  # the plain pass must start where extract did

        def fresh_start() -> Tuple[tuple, Dict[str, Any]]:
            """Every forward pass here starts where extract's did: the model's state, the RNG state
            and the inputs as they were (what a pass before changed in place is put back)."""
            _restore(loaded.model, pristine)
            seed_everything(loaded.seed)
            return loaded.fresh_inputs()

        gradients = request.get("gradients")  # docs/gradients.md, "Validation"

        def start() -> Tuple[tuple, Dict[str, Any]]:
            """fresh_start, and with gradients the inputs made to require them as extract made
            them, so that every pass runs the ops extract's did."""
            args, kwargs = fresh_start()
            if gradients:
                args, kwargs, _ = inputs_requiring_grad(args, kwargs)
            return args, kwargs

        session = ValidationSession(wire, loaded.model, expected, arrays,
                                    check_dependence=bool(request.get("check_dependence", True)),
                                    gradients=gradients)
        args, kwargs = start()
        out, forward_s = run_captured(wrappers, session, loaded.model, args, kwargs, grad=loaded.grad)
        session.add_outputs(out)
        gradcheck = session.gradcheck
        if gradcheck is not None:
            gradcheck.after_forward(session.tag_of)
            gradcheck.target(loaded.module, out, args, kwargs, arrays, {e["id"]: e.get("array") for e in expected},
                             session.tag_of)
        del out, args, kwargs  # with gradients, the forward pass's graph: freed before the next passes
        wire.flush()

        # completeness: the calls a TorchFunctionMode sees, under capture and in a plain pass. In
        # passes of their own, since torch's fused fast paths step aside while a mode is active.
        captured_calls = plain_calls = None
        if completeness.available():
            captured_calls = completeness.CallCounter(NOT_OPS, wrappers.switch)
            probe = completeness.ProbeSession(loaded.model)
            args, kwargs = start()
            with captured_calls:
                run_captured(wrappers, probe, loaded.model, args, kwargs, grad=loaded.grad)
        wrappers.restore()
        if completeness.available():
            plain_calls = completeness.CallCounter(NOT_OPS)
            args, kwargs = start()
            with torch.set_grad_enabled(loaded.grad), plain_calls:
                loaded.model(*args, **kwargs)

        # ground truth: a plain forward pass, no wrappers installed, same seed and inputs
        args, kwargs = fresh_start()  # what the model was given, not what the captured pass left
        leaves: List[Any] = []
        if gradients:
            original = (args, kwargs)
            args, kwargs, made = inputs_requiring_grad(args, kwargs)
            leaves = input_leaves(original, (args, kwargs), made)
        with torch.set_grad_enabled(loaded.grad):  # the grad mode the run was captured in
            plain_out = loaded.model(*args, **kwargs)
            plain = tensors_in_order(plain_out)
        ground: List[Dict[str, Any]] = []
        for i, want in enumerate(outputs_expected):
            entry: Dict[str, Any] = {"id": want["id"], "ok": False, "reason": None, "max_abs_err": None}
            if i >= len(plain):
                entry["reason"] = f"the plain forward pass returned {len(plain)} tensors, the run has {len(outputs_expected)}"
            elif not want.get("array"):
                entry.update(ok=True, reason="not saved (--layers)")
            else:
                got, _ = tensor_bytes(plain[i])
                result = compare(got, arrays.get(want["array"]), want["dtype"])
                entry.update(ok=result["ok"], reason=result.get("reason"), max_abs_err=result.get("max_abs_err"))
            ground.append(entry)
        if len(plain) > len(outputs_expected):
            ground.append({"id": None, "ok": False, "max_abs_err": None,
                           "reason": f"the plain forward pass returned {len(plain)} tensors, the run has {len(outputs_expected)}"})
        done: Dict[str, Any] = {"type": "done", "num_ops": session.num_ops, "num_passes": session.next_id - 1,
                                "counts": session.counts, "ground_truth": ground,
                                "completeness": completeness.report(captured_calls, plain_calls),
                                "forward_ms": forward_s * 1000.0}
        if gradcheck is not None and gradients:
            stage["phase"] = "grads"
            inputs = sorted((e for e in expected if e.get("kind") == "input"), key=lambda e: e["id"])
            grad_ground = plain_backward(loaded.model, loaded.module, gradcheck.spec, plain_out, args, kwargs, leaves,
                                         inputs, list(gradients.get("params") or []), gradcheck.arrays)
            verdicts = gradcheck.finish()
            gradcheck.close()
            done["gradients"] = {"verdicts": verdicts, "counts": summary(verdicts), "ground_truth": grad_ground}
        arrays.close()
        done["wall_ms"] = (time.perf_counter() - wall0) * 1000.0
        wire.send(done, flush=True)

    return guarded(wire, request, body)
