"""One forward pass under capture: the session switched on, autograd as asked, the collector's
generations frozen, torch.compile'd code run op by op, an optional cProfile of it."""

import gc
import os
import time
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..compat import eager_forward
from .install import Wrappers
from .session import CaptureSession

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
