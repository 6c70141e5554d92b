"""The `extract` request: load the model and inputs (request.py), run one captured forward pass,
stream it."""

import time
from typing import Any, Dict, Optional

import torch

from .capture.grads import GradWatch, inputs_requiring_grad, run_backward, target_of
from .capture.install import Wrappers
from .capture.run import run_captured
from .capture.session import CaptureSession
from .load import seed_everything
from .errors import UserError
from .request import Loaded, guarded
from .wire import Wire


def extract(wire: Wire, request: Dict[str, Any]) -> int:
    wall0 = time.perf_counter()
    if request.get("direct"):
        wire.prepare_direct()

    def body(loaded: Loaded, wrappers: Wrappers, stage: Dict[str, str]) -> None:
        stage["phase"] = "capture"
        session = CaptureSession(wire, loaded.model, save=request.get("save", "all"),
                                 max_repr=int(request.get("max_args_repr", 64)))
        seed_everything(loaded.seed)  # the forward pass sees the same RNG state on every run
        grads: Dict[str, Any] = request.get("grads") or {}
        args, kwargs = loaded.args, loaded.kwargs
        if grads:  # docs/gradients.md
            if not loaded.grad:
                raise UserError("grads", "gradients need the forward pass to run with autograd on",
                                "drop --no-grad (--grads runs the forward pass with autograd on)")
            args, kwargs, _leaves = inputs_requiring_grad(args, kwargs)
            if request.get("save") != "none":  # a dry run (extract --layers) runs the same ops, no backward
                session.grads = GradWatch(wire)
        direct = request.get("direct")
        if direct:  # the payloads go straight into the CLI's .npz (docs/wire.md, "Direct writes")
            wire.open_direct(str(direct["path"]), int(direct["at"]))
            if loaded.device.type == "cpu":  # torch's threads may fill the cores: writes wait for a free one
                wire.yield_cores(torch.get_num_threads())
        try:
            cpu0 = time.process_time()  # every thread's CPU: torch's, the writer's
            out, forward_s = run_captured(wrappers, session, loaded.model, args, kwargs, grad=loaded.grad)
            out = session.alias_outputs(out)  # with --grads: the target's own gradient at each output
            outputs = session.add_outputs(out)
            extra = None
            if session.grads is not None:
                stage["phase"] = "grads"
                target = target_of(grads.get("target") or {"kind": "sum"}, loaded.module, out, args, kwargs)
                extra = run_backward(session.grads, target, loaded.model, bool(grads.get("params")))
            send_done(wire, session, wrappers, outputs, forward_s, wall0, extra, cpu0)
        finally:
            if session.grads is not None:
                session.grads.close()
            wire.close_direct()

    return guarded(wire, request, body)


def send_done(wire: Wire, session: CaptureSession, wrappers: Wrappers, outputs: Dict[str, Any], forward_s: float,
              wall0: float, extra: Optional[Dict[str, Any]] = None, cpu0: Optional[float] = None) -> None:
    """The `done` frame that ends a captured forward's stream (also a dataset's probe); with a
    direct file, once every direct write is done, with their CRCs. With `cpu0` (the process's CPU
    time when the forward began) it carries `cpu_ms`, the CPU all the agent's threads used since."""
    t0 = time.perf_counter()
    done: Dict[str, Any] = dict(extra or {})
    crcs = wire.finish_direct()
    if crcs is not None:
        done["direct_crcs"] = crcs
    else:
        wire.flush(wait=True)
    done["drain_ms"] = (time.perf_counter() - t0) * 1000.0  # the bytes still on their way at the end
    if cpu0 is not None:
        done["cpu_ms"] = (time.process_time() - cpu0) * 1000.0
    wire.send({**done, "type": "done", "num_ops": session.num_ops, "torch_calls": session.torch_calls,
               "num_passes": session.next_id - 1, "outputs": outputs,
               "forward_ms": forward_s * 1000.0, "wall_ms": (time.perf_counter() - wall0) * 1000.0,
               "wrapped": wrappers.count}, flush=True)
