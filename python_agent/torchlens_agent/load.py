"""Loading: the user's model file, the model in it, and the forward pass's inputs.

Every failure here raises `UserError` with a message that names the problem and the fix; the
agent turns it into an `error` frame.
"""

import importlib.util
import inspect
import io
import os
import random
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .walk import map_tensors

NPY_MAGIC = b"\x93NUMPY"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def import_model_file(path: str):
    """Import the user's file as a module; its folder goes first on sys.path for its own imports."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserError("load", f"model file not found: {path}", "check the path given to extract")
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("torchlens_user_model", path)
    if spec is None or spec.loader is None:
        raise UserError("load", f"cannot import {path}: not a Python file", "give a .py file that defines the model")
    module = importlib.util.module_from_spec(spec)
    sys.modules["torchlens_user_model"] = module
    spec.loader.exec_module(module)  # SyntaxError and friends propagate with their own frames
    return module


def _describe_definitions(module) -> str:
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if isinstance(value, nn.Module):
            names.append(f"{name} (an nn.Module instance)")
        elif inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__:
            names.append(f"{name} (an nn.Module class)")
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            names.append(f"{name}()")
    return ", ".join(names) if names else "nothing usable"


def _instantiate(value: Any, name: str, module) -> nn.Module:
    if isinstance(value, nn.Module):
        return value
    if inspect.isclass(value) and issubclass(value, nn.Module):
        try:
            return value()
        except TypeError as exc:
            raise UserError("load", f"cannot build {name}() without arguments: {exc}",
                            "add a build_model() function to the file that returns the model") from exc
    if callable(value):
        try:
            made = value()
        except TypeError as exc:
            if "argument" not in str(exc):
                raise
            raise UserError("load", f"cannot call {name}() without arguments: {exc}",
                            "make the factory take no arguments, or add a build_model() that calls it") from exc
        if isinstance(made, nn.Module):
            return made
        raise UserError("load", f"{name}() returned {type(made).__name__}, not an nn.Module",
                        "make it return the model (an nn.Module instance)")
    raise UserError("load", f"{name} in {module.__file__} is a {type(value).__name__}, not a model",
                    "name an nn.Module instance, class, or a function that returns one")


def find_model(module, name: Optional[str]) -> nn.Module:
    """--model NAME, else build_model(), else `model`."""
    if name:
        if not hasattr(module, name):
            raise UserError("load", f"{module.__file__} has no '{name}'; it defines: {_describe_definitions(module)}",
                            "pass --model with one of those names")
        return _instantiate(getattr(module, name), name, module)
    for candidate in ("build_model", "model"):
        if hasattr(module, candidate):
            return _instantiate(getattr(module, candidate), candidate, module)
    raise UserError("load", f"no model found in {module.__file__}: it defines {_describe_definitions(module)}",
                    "define build_model() or a variable named model, or pass --model NAME")


# -- inputs ------------------------------------------------------------------------------------------

def _torch_load(data: bytes, allow_pickle: bool) -> Any:
    buf = io.BytesIO(data)
    params = inspect.signature(torch.load).parameters
    if "weights_only" not in params and not allow_pickle:
        raise UserError("input", f"this torch ({torch.__version__}) has no safe loader (torch.load(weights_only=True) "
                        "came in torch 1.13), and loading a .pt file without it runs arbitrary code",
                        "pass --allow-pickle if you trust the file, save the input as .npy, or use a newer torch")
    if not allow_pickle:
        try:
            return torch.load(buf, map_location="cpu", weights_only=True)
        except Exception as exc:  # the safe loader refuses arbitrary objects
            if "weights_only" in str(exc) or "Unsupported" in str(exc) or "global" in str(exc).lower():
                raise UserError("input", f"the input file holds objects the safe loader refuses: {_refusal(exc)}",
                                "save plain tensors, lists, tuples or dicts, or pass --allow-pickle if you trust the file") from exc
            raise
    return torch.load(buf, map_location="cpu")


def _refusal(exc: BaseException) -> str:
    """What the safe loader refused, in one line: torch 1.13 and 2.x both say it after
    "WeightsUnpickler error:" (2.x opens with a paragraph of advice, with terminal bold codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].strip().splitlines()[0]
    return text.splitlines()[0] if text else type(exc).__name__


def load_input_file(path: str, allow_pickle: bool = False) -> Any:
    if not os.path.isfile(path):
        raise UserError("input", f"input file not found: {path}", "check the path given to --input")
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(NPY_MAGIC):
        try:
            return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
        except ValueError as exc:
            raise UserError("input", f"{path} is a .npy file numpy cannot read safely: {exc}",
                            "save a plain numeric array with numpy.save") from exc
    if not (data.startswith(b"PK\x03\x04") or data[:1] == b"\x80"):
        raise UserError("input", f"{path} is neither a .npy file nor a torch.save file (it starts with {data[:8]!r})",
                        "save the input with torch.save(tensor, path) or numpy.save(path, array)")
    try:
        return _torch_load(data, allow_pickle)
    except UserError:
        raise
    except Exception as exc:
        raise UserError("input", f"{path} is neither a .npy file nor a file torch.load can read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                        "save the input with torch.save(tensor, path) or numpy.save(path, array)") from exc


def split_args(value: Any) -> Tuple[tuple, Dict[str, Any]]:
    """A tensor is one argument, a tuple/list is positional arguments, {"args", "kwargs"} is explicit."""
    if isinstance(value, dict) and set(value) <= {"args", "kwargs"} and value:
        args = value.get("args", ())
        kwargs = value.get("kwargs", {})
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise UserError("input", "an input dict must be {'args': [...], 'kwargs': {...}}",
                            "save the input as {'args': [x, y], 'kwargs': {'mask': m}}")
        return tuple(args), dict(kwargs)
    if isinstance(value, (list, tuple)):
        return tuple(value), {}
    return (value,), {}


def random_inputs(shapes: List[List[int]], dtype: str, seed: int) -> Tuple[tuple, Dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype, None)
    if not isinstance(dt, torch.dtype):
        raise UserError("input", f"unknown dtype {dtype!r}", "use a torch dtype name such as float32")
    tensors = []
    for shape in shapes:
        if dt.is_floating_point or dt.is_complex:
            tensors.append(torch.randn(*shape, generator=gen).to(dt))
        else:
            tensors.append(torch.randint(0, 10, tuple(shape), generator=gen).to(dt))
    return tuple(tensors), {}


def example_inputs(module) -> Tuple[tuple, Dict[str, Any]]:
    fn = getattr(module, "example_input", None) or getattr(module, "example_inputs", None)
    if fn is None:
        raise UserError("input", f"no input given and {module.__file__} defines no example_input()",
                        "pass --input x.pt, --input-shape 1,3,224,224, or define example_input() in the file")
    return split_args(fn() if callable(fn) else fn)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError("input", f"unknown device {name!r}", "use cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("input", "--device cuda was asked for, but this torch sees no GPU",
                            "run with --device cpu, or on a machine where torch.cuda.is_available() is true")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError("input", f"--device {name}: only {torch.cuda.device_count()} GPU(s) here",
                            f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    return device


def to_device(obj: Any, device: torch.device) -> Any:
    return map_tensors(obj, lambda t: t.to(device))
