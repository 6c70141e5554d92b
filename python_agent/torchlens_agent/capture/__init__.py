"""Capture: wrap torch's callables, tag every tensor with the pass that made it, emit one record per op.

How it works. `Wrappers.install()` (install.py) replaces the tensor-producing callables of `torch`,
`torch.nn.functional`, `torch.linalg`, `torch.fft`, `torch.special` and `torch.Tensor` (methods,
operators, properties such as `.T`) and `nn.Module.__call__` with thin wrappers (wrappers.py). A
wrapper does nothing but call the original while no `CaptureSession` is active, so wrappers may
stay installed while user code is imported and built (its `from torch import relu` then still
reaches us).

During a forward pass every tensor a recorded op returns is tagged (`_tl_tag`: session id, pass
id). A call's parents are the tagged tensors among its arguments. Nested calls: when a wrapped
function is Python built on other wrapped functions (`F.relu` → `torch.relu`,
`F.multi_head_attention_forward`), the inner calls are recorded and the outer call only for
outputs no inner call produced, so internals stay visible and nothing is recorded twice.

All mutable state of one forward pass lives in the `CaptureSession` (session.py).

The modules, one idea each:
- ops.py: which callables are ops, by name; label names, in-place detection, fused kernels' notes
- args.py: summaries of non-tensor arguments (a record's `args`)
- arrays.py: a tensor's bytes as they travel, and the shape a pass records
- plan.py: which passes get their bytes sent (`SavePlan`)
- session.py: one forward pass's state and records (`CaptureSession`)
- wrappers.py: what each kind of wrapper does when called
- install.py: installing and restoring the wrappers, rebinding names (`Wrappers`)
- references.py: references to torch functions taken before the install, walked and rebound
- slots.py: torch.Tensor's sequence slot, kept as it was (ctypes)
- run.py: one forward pass under capture (`run_captured`)
"""

from .install import Wrappers
from .run import run_captured
from .session import CaptureSession

__all__ = ["CaptureSession", "Wrappers", "run_captured"]
