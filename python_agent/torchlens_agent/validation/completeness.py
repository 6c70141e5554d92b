"""Completeness: did the capture see every call into torch that made a tensor?

The wrappers see a call only when it reaches them; a torch function held where rebinding did not
reach (capture/references.py) runs unseen, and its output turns up as a `constant` with no parent.
Replay cannot notice: it checks the passes there are. So validate counts the calls a second way,
with a `TorchFunctionMode`, which torch itself invokes for every torch-API call however it was
reached:

- during a captured forward pass of its own (`ProbeSession`), every call the mode sees that no
  wrapper announced (`dispatching`, set by `ProbeSession.dispatch` right before it calls the
  original) is one the capture missed; it is named with the line of user code that made it;
- during the plain forward pass (ground truth, no wrappers), the same mode counts the calls
  again, and the two counts must agree: a plain forward that makes other calls than the captured
  one computed something else.

Only outermost calls are seen (torch pops a mode while its handler runs, so calls made inside a
torch function are not), in both passes alike; calls that make no tensor (`x.shape`, `x.size()`)
and attributes the capture deliberately leaves alone (`.data`, `.grad`, `requires_grad_`) are not
counted.
"""

import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor
from torch.nn import Parameter

from ..capture.session import CaptureSession
from ..walk import iter_tensors

try:  # torch 1.13 and 2.x both have it; without it the check reports itself as not run
    from torch.overrides import TorchFunctionMode
except ImportError:  # pragma: no cover - torch < 1.13
    TorchFunctionMode = None  # type: ignore[assignment,misc]

_AGENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # torchlens_agent/, all of it


def call_name(func: Any) -> str:
    """The name a torch-function call goes by: a function's own, an attribute getter's attribute."""
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", None) or getattr(getattr(owner, "fget", None), "__name__", None) or name
    return name


def _original(func: Any) -> Any:
    """What to call for a call the mode intercepted: torch looks the function up by name, so during
    capture it may hand over a wrapper (`x - y` arrives as the wrapper of `Tensor.sub`); calling that
    would record the op a second time, inside the outer wrapper's call."""
    if getattr(func, "_tl_wrapper", False):
        return getattr(func, "__wrapped__", func)
    owner = getattr(func, "__self__", None)
    fget = getattr(owner, "fget", None) if isinstance(owner, property) else None
    if fget is not None and getattr(fget, "_tl_wrapper", False):  # a wrapped property's getter
        return lambda obj, *rest: getattr(fget, "__wrapped__", fget)(obj)
    return func


def _makes_tensor(name: str, out: Any) -> bool:
    if name == "__setitem__":  # returns None; the tensor it wrote to is what it made
        return True
    # A parameter is never a pass (capture names it on the ops that use it): initialising one in
    # place (`nn.init.uniform_` of a module built inside forward) makes no activation.
    if isinstance(out, Tensor):
        return not isinstance(out, Parameter)
    if isinstance(out, (tuple, list, dict)):
        return any(not isinstance(t, Parameter) for _, t in iter_tensors(out))
    return False


def _caller() -> str:
    """file:line of the innermost frame outside torch and torchlens: the user's call."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path.startswith(_AGENT_DIR) or f"{os.sep}torch{os.sep}" in path or path.startswith("<")):
            return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


if TorchFunctionMode is not None:

    class CallCounter(TorchFunctionMode):  # type: ignore[misc,valid-type]
        """Counts tensor-making torch calls by name; with a capture `switch`, also lists the calls
        no wrapper announced."""

        def __init__(self, ignored: frozenset, switch: Any = None) -> None:
            super().__init__()
            self.ignored = ignored
            self.switch = switch
            self.counts: Counter = Counter()
            self.unseen: Dict[Tuple[str, str], int] = {}

        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            s = self.switch.session if self.switch is not None else None
            if self.switch is not None and (s is None or (s.paused and not s.opaque)):  # torchlens's own work
                return func(*args, **kwargs)
            announced = False
            if s is not None:
                announced = s.dispatching or s.opaque > 0  # inside an opaque op: that op's own calls
                s.dispatching = False
            out = _original(func)(*args, **kwargs)
            name = call_name(func)
            if name in self.ignored or not _makes_tensor(name, out):
                return out
            self.counts[name] += 1
            if s is not None and not announced:
                key = (name, _caller())
                self.unseen[key] = self.unseen.get(key, 0) + 1
            return out
else:  # pragma: no cover
    CallCounter = None  # type: ignore[assignment,misc]


class _Discard:
    """A wire that sends nothing: the probe's records are not wanted, only its wrappers' calls."""

    def send(self, header: Any, *, flush: bool = False) -> None:
        pass

    def place(self, record: Any, nbytes: int, ndim: int) -> None:
        pass

    def send_data(self, pass_id: int, payload: Any, owned: bool = False) -> None:
        pass

    def flush(self, wait: bool = False) -> None:
        pass


class ProbeSession(CaptureSession):
    """A capture that records nothing and tells the CallCounter which calls the wrappers made."""

    def __init__(self, model: Any) -> None:
        super().__init__(_Discard(), model, save="none")
        self.dispatching = False  # a wrapper is calling its original now: the CallCounter reads it

    def dispatch(self, orig: Any, func: str, qualname: str, args: tuple, kwargs: Dict[str, Any]) -> Any:
        """The call as capture records it, announced to the CallCounter while the original runs."""
        first_new_id = self.next_id
        self.dispatching = True
        try:
            out = orig(*args, **kwargs)
        finally:
            self.dispatching = False
        self.on_call(func, qualname, args, kwargs, out, first_new_id, 0.0)
        return out


def available() -> bool:
    return CallCounter is not None


def report(captured: Optional[Any], plain: Optional[Any]) -> Dict[str, Any]:
    """The `completeness` part of validate's done frame: ok, the calls the capture missed (function,
    where, how often), and the two passes' call counts with the functions whose counts differ."""
    if captured is None or plain is None:
        return {"checked": False, "ok": True, "reason": "this torch has no TorchFunctionMode", "unseen": [],
                "captured_calls": None, "plain_calls": None, "differences": []}
    unseen: List[Dict[str, Any]] = [{"func": f, "where": w, "count": n} for (f, w), n in captured.unseen.items()]
    names = sorted(set(captured.counts) | set(plain.counts))
    differences = [{"func": n, "captured": captured.counts[n], "plain": plain.counts[n]}
                   for n in names if captured.counts[n] != plain.counts[n]]
    total_c, total_p = sum(captured.counts.values()), sum(plain.counts.values())
    return {"checked": True, "ok": not unseen and total_c == total_p, "unseen": unseen,
            "captured_calls": total_c, "plain_calls": total_p, "differences": differences}
