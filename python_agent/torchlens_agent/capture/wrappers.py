"""The wrappers' own code: what a wrapped callable does when called, for each kind of callable (a
torch function or method, a property, a pausing call, a torch.func transform, a TorchScript
function, a custom autograd Function, `nn.Module.__call__`, a `torch.ops` packet).

Every wrapper reads the active session through one `Switch`; with none (or a paused one) it only
calls the original. Installing them is install.py's work.
"""

import functools
from typing import Any, Callable, Optional

from torch import Tensor

from .ops import writes_arguments
from .session import CaptureSession

class Switch:
    """The one pointer from installed wrappers to the active session (None: pass through)."""

    session: Optional[CaptureSession] = None


def make_wrapper(orig: Callable, func: str, qualname: str, switch: Switch) -> Callable:
    """The wrapper of one op: the original alone while no session is on or it is paused, else the
    call handed to the session (`CaptureSession.dispatch`)."""
    writes = writes_arguments(func)  # decided once per function, not per call

    def wrapper(*args, **kwargs):
        s = switch.session
        if s is None or s.paused:
            return orig(*args, **kwargs)
        if writes or (kwargs and kwargs.get("out") is not None):
            s.before_write(args, kwargs)
        return s.dispatch(orig, func, qualname, args, kwargs)

    try:
        wrapper.__name__ = getattr(orig, "__name__", func)
        wrapper.__qualname__ = getattr(orig, "__qualname__", func)
        wrapper.__doc__ = getattr(orig, "__doc__", None)
        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    wrapper._tl_wrapper = True  # type: ignore[attr-defined]
    return wrapper


def make_pausing(orig: Callable, switch: Switch) -> Callable:
    """orig with capture paused inside: a call whose own work is printing or copying out."""
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


def _make_opaque(orig: Callable, switch: Switch) -> Callable:
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


def make_paused_op(orig: Callable, func: str, switch: Switch) -> Callable:
    """One op for a call whose inside capture must not see (it runs on functorch's wrapped tensors)."""
    return make_wrapper(_make_opaque(orig, switch), func, f"torch.func.{func}", switch)


def make_transform(orig: Callable, func: str, switch: Switch) -> Callable:
    """`vmap(fn, ...)` & co.: the function they return is one op when called (`make_paused_op`)."""
    def transform(*args: Any, **kwargs: Any) -> Callable:
        return make_paused_op(orig(*args, **kwargs), func, switch)

    transform.__name__ = getattr(orig, "__name__", func)
    transform.__wrapped__ = orig  # type: ignore[attr-defined]
    transform._tl_wrapper = True  # type: ignore[attr-defined]
    return transform


def make_property(orig: Any, func: str, switch: Switch) -> property:
    """A tensor property that returns a tensor (`.T`): its getter is an op, its setter as it was."""
    getter = make_wrapper(lambda self: orig.__get__(self, Tensor), func, f"Tensor.{func}", switch)
    getter.__name__ = func  # the property's name, as torch reports the attribute it gets
    def setter(self, value, _orig=orig):  # noqa: ANN001
        _orig.__set__(self, value)

    return property(getter, setter if hasattr(orig, "__set__") else None)


class OpProxy:
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


def make_script_call(orig_call: Callable, switch: Switch) -> Callable:
    """`ScriptFunction.__call__`: one op named after the scripted function."""
    def call(fn, *args, **kwargs):
        s = switch.session
        if s is None or s.paused:
            return orig_call(fn, *args, **kwargs)
        name = getattr(fn, "name", "script")
        qualname = f"torch.jit.{getattr(fn, 'qualified_name', name)}"
        return make_wrapper(functools.partial(orig_call, fn), name, qualname, switch)(*args, **kwargs)

    call._tl_wrapper = True  # type: ignore[attr-defined]
    return call


def make_function_apply(orig_apply: Any, switch: Switch) -> classmethod:
    """Custom autograd Functions (`MyFn.apply(x)`): recorded under the Function's class name, unless
    the ops inside its forward already produced the outputs (then those are what is recorded)."""

    def apply(cls, *args, **kwargs):
        bound = orig_apply.__get__(None, cls)
        return make_wrapper(bound, cls.__name__, f"{cls.__module__}.{cls.__qualname__}.apply", switch)(*args, **kwargs)

    return classmethod(apply)


def make_module_call(orig_call: Callable, switch: Switch) -> Callable:
    """`nn.Module.__call__`: the module stack the records carry, and a `module` record per call."""
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


