"""What differs between the torches the agent runs under (1.13 and 2.x), in one place.

Everything here is decided by what the running torch has (an attribute, a module), never by
comparing version numbers, except `torch_version()` itself, which reports it.
"""

import contextlib
import importlib
import os
import re
import sys
from typing import Any, Iterator, Tuple

import torch

_DISABLE_ENV = "TORCH_COMPILE_DISABLE"  # read by torch._dynamo.config when it is imported


def torch_version() -> Tuple[int, int]:
    """(major, minor) of the running torch: "2.13.0+cpu" is (2, 13), "1.13.0a0" is (1, 13)."""
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _dynamo() -> Any:
    """torch._dynamo where this torch has one (2.0 and newer), else None. Imported only when a
    model already uses torch.compile (see `uses_compile`), since the import costs seconds."""
    try:
        return importlib.import_module("torch._dynamo")
    except ImportError:
        return None


def has_compile() -> bool:
    """This torch has torch.compile (2.0 and newer)."""
    return callable(getattr(torch, "compile", None))


def uses_compile() -> bool:
    """Something in this process may have compiled with torch.compile: torch._dynamo was imported
    (torch.compile imports it; torch itself does not at `import torch`)."""
    return "torch._dynamo" in sys.modules


@contextlib.contextmanager
def eager_forward() -> Iterator[None]:
    """Inside: modules and functions made with torch.compile run their Python eagerly, op by op, so
    capture's wrappers see every op (a compiled region would run its ops in a generated graph, out
    of their reach). torch._dynamo is told to compile nothing and to run no code it compiled
    before: `torch.compiler.set_stance("force_eager")` where torch has it (2.6 and newer), else
    `torch._dynamo.config.disable` (which leaves frames compiled earlier in this process alone).

    Enter it outside any compiled region (around the whole forward pass). A no-op where torch has no
    torch.compile (1.13). Where nothing was compiled yet, torch._dynamo is not imported (that takes
    a second); should the forward pass import it (a torch.compile inside forward, torch.func.grad's
    first call), it starts disabled (TORCH_COMPILE_DISABLE) and is enabled again on the way out.
    """
    if not has_compile():
        yield
        return
    if not uses_compile():
        before_env = os.environ.get(_DISABLE_ENV)
        os.environ[_DISABLE_ENV] = "1"
        try:
            yield
        finally:
            if before_env is None:
                os.environ.pop(_DISABLE_ENV, None)
            else:
                os.environ[_DISABLE_ENV] = before_env
            config: Any = sys.modules.get("torch._dynamo.config")
            if config is not None and hasattr(config, "disable"):  # imported inside: as read outside
                config.disable = before_env == "1"
        return
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is not None:
        with set_stance("force_eager"):
            yield
        return
    dynamo = _dynamo()
    config = getattr(dynamo, "config", None)
    if config is None or not hasattr(config, "disable"):
        yield
        return
    before = config.disable
    config.disable = True
    try:
        yield
    finally:
        config.disable = before
