"""What every request that runs the model shares: load the model file and the inputs, install the
wrappers and point the user's names at them, send the `model` frame, and turn any exception into an
`error` frame (`guarded`). The requests themselves are extract.py and validate.py.
"""

import os
import sys
from typing import Any, Callable, Dict, Tuple

from .capture.install import Wrappers
from .dtypes import dtype_name
from .errors import UserError, error_frame
from .load import (example_inputs, find_model, import_model_file, load_input_file,
                   random_inputs, resolve_device, seed_everything, split_args, to_device)
from .walk import map_tensors
from .wire import DirectWriteError, Wire, WireClosed


def _model_frame(model, device, seed: int) -> Dict[str, Any]:
    """The `model` frame (docs/wire.md): the module tree with its parameters and buffers."""
    modules = []
    for address, mod in model.named_modules():
        params = [{"name": n, "shape": list(p.shape), "dtype": dtype_name(p.dtype), "numel": p.numel()}
                  for n, p in mod.named_parameters(recurse=False)]
        buffers = [{"name": n, "shape": list(b.shape), "dtype": dtype_name(b.dtype)}
                   for n, b in mod.named_buffers(recurse=False) if b is not None]
        modules.append({"address": address, "class": type(mod).__name__, "params": params,
                        "buffers": buffers, "training": mod.training})
    num_params = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
    return {"type": "model", "class": type(model).__name__, "modules": modules, "device": str(device), "seed": seed,
            "num_params": num_params}


def _inputs(request: Dict[str, Any], module, seed: int):
    """The forward pass's (args, kwargs), from the request's `input`."""
    spec: Dict[str, Any] = request.get("input") or {"kind": "example"}
    kind = spec.get("kind")
    if kind == "file":
        return split_args(load_input_file(spec["path"], bool(request.get("allow_pickle"))))
    if kind == "shape":
        return random_inputs(spec["shapes"], spec.get("dtype") or "float32", seed)
    if kind == "example":
        return example_inputs(module)
    if kind == "none":  # the request brings its inputs itself (a dataset's batches)
        return (), {}
    raise UserError("input", f"unknown input kind {kind!r}")


class Loaded:
    """What every request that runs the model needs: the model, its inputs, the wrappers.

    `stage` is shared with `guarded`, so an error names the phase it happened in."""

    def __init__(self, wire: Wire, request: Dict[str, Any], wrappers: Wrappers, stage: Dict[str, str]):
        self.seed = int(request.get("seed", 0))
        # autograd on or off in the forward pass; requests from before the choice existed ran with it on
        self.grad = bool(request.get("grad", True))
        seed_everything(self.seed)
        before = set(sys.modules)
        self.module = import_model_file(request["model_file"])
        self.model = find_model(self.module, request.get("model_name"))
        # Wrap only now, so TorchScript compiled at import or build time meets torch as it is; then
        # point the user's own `from torch import relu` names at the wrappers too.
        wrappers.install()
        user_modules = _user_modules(self.module, set(sys.modules) - before)
        wrappers.rebind(user_modules + _library_modules())
        # ... and references taken by value at import or build time (`self.act = F.gelu`)
        wrappers.rebind_references(self.model, user_modules + _class_modules(self.model))
        stage["phase"] = "input"
        self.device = resolve_device(request.get("device") or "cpu")
        args, kwargs = _inputs(request, self.module, self.seed)
        self.model = self.model.to(self.device)
        self.args, self.kwargs = to_device(args, self.device), to_device(kwargs, self.device)
        # forwards that change their inputs in place (`x += 1`) must not change the next forward's
        self._pristine = pristine_copy((self.args, self.kwargs))
        wire.send(_model_frame(self.model, self.device, self.seed), flush=True)

    def fresh_inputs(self) -> Tuple[tuple, Dict[str, Any]]:
        """Copies of the inputs as they were loaded, for a forward pass after the first."""
        return pristine_copy(self._pristine)


def pristine_copy(obj: Any) -> Any:
    """The same structure with every tensor copied (values, dtype, device, requires_grad), so that
    nothing done to the copy reaches the original."""
    def copy(t):
        c = t.detach().clone()
        return c.requires_grad_(True) if t.requires_grad and (c.is_floating_point() or c.is_complex()) else c

    return map_tensors(obj, copy)


def _library_modules() -> list:
    """torch's, torchvision's and torchaudio's own Python modules: names they imported from torch
    (`from torch import _weight_norm` in torch.nn.utils.weight_norm) must reach the wrappers too."""
    return [m for name, m in list(sys.modules.items())
            if m is not None and name.split(".")[0] in ("torch", "torchvision", "torchaudio")
            and name not in ("torch", "torch._VF") and not name.startswith("torch._C")]


def _class_modules(model) -> list:
    """The modules defining the model's module classes (a library's registries live there), torch's
    own left to `_library_modules`."""
    names = {cls.__module__ for mod in model.modules() for cls in type(mod).__mro__}
    return [sys.modules[n] for n in sorted(names) if n in sys.modules and n.split(".")[0] not in ("torch", "builtins")]


def _user_modules(main, new_names) -> list:
    """The model file's module and the modules it imported from its own folder."""
    folder = os.path.dirname(os.path.abspath(main.__file__))
    found = [main]
    for name in new_names:
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if mod is not None and mod is not main and path and os.path.abspath(path).startswith(folder + os.sep):
            if "site-packages" not in path and "dist-packages" not in path:
                found.append(mod)
    return found


def guarded(wire: Wire, request: Dict[str, Any], body: Callable[[Loaded, Wrappers, Dict[str, str]], None]) -> int:
    """Load the model and inputs, run `body`, and turn any exception into an error frame."""
    wrappers = Wrappers()
    stage = {"phase": "load"}
    try:
        loaded = Loaded(wire, request, wrappers, stage)
        body(loaded, wrappers, stage)
        return 0
    except WireClosed:
        return 1
    except BaseException as exc:  # noqa: BLE001 - everything the user's code raises becomes an error frame
        if isinstance(exc, KeyboardInterrupt):
            raise
        phase = exc.phase if isinstance(exc, (UserError, DirectWriteError)) else stage["phase"]
        try:
            wire.flush()
            wire.send(error_frame(phase, exc), flush=True)
        except WireClosed:
            pass
        return 1
    finally:
        wrappers.restore()
