"""Check a run against the model computed without torchlens: python3 check_run.py RUN MODEL.py INPUT.pt

Prints JSON: whether each saved output equals the model's own output (same seed, same input), and
how many tensor-returning torch calls the forward pass made, counted independently of torchlens
with a TorchFunctionMode (top-level calls only: each one must yield at least one recorded pass).
"""
import importlib.util
import json
import os
import random
import sys

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

run, model_file, input_file = sys.argv[1:4]
seed = json.load(open(os.path.join(run, "manifest.json")))["seed"]


def seed_all():
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load():
    spec = importlib.util.spec_from_file_location("checked_model", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def split(value):
    if isinstance(value, dict) and set(value) <= {"args", "kwargs"}:
        return tuple(value.get("args", ())), dict(value.get("kwargs", {}))
    if isinstance(value, (list, tuple)):
        return tuple(value), {}
    return (value,), {}


def flatten(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in flatten(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in flatten(x)]
    return []


class Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if flatten(out) and getattr(func, "__name__", "") not in ("__get__", "__set__"):
            self.calls += 1
        return out


seed_all()
module = load()
model = module.build_model()
args, kwargs = split(torch.load(input_file))
# the grad mode the run was made in (extract's default is no_grad): kernels may differ between the
# two (torch 2's LSTM on an AMD CPU does, in the last bits), and the comparison below is exact
grad = json.load(open(os.path.join(run, "manifest.json")))["options"].get("grad", True)
seed_all()
with torch.set_grad_enabled(grad):
    expected = flatten(model(*args, **kwargs))
seed_all()
counter = Count()
with counter, torch.set_grad_enabled(grad):
    model(*args, **kwargs)

log = json.load(open(os.path.join(run, "log.json")))
arrays = np.load(os.path.join(run, "activations.npz"))
saved = [arrays[log_label] for log_label in (next(p["array"] for p in log["passes"] if p["label"] == o) for o in log["outputs"])]
print(json.dumps({
    "outputs_equal": len(saved) == len(expected) and all(np.array_equal(s, e.detach().numpy()) for s, e in zip(saved, expected)),
    "num_outputs": len(expected),
    "torch_calls": counter.calls,
    "npz_keys": sorted(arrays.files),
}))
