"""The plain forward and backward pass that `bench/grads.mjs` holds `torchlens extract --grads`
against: a fresh process imports torch, builds the model and its input, makes the floating-point
inputs require gradients (as extract --grads does), and runs one cold forward with autograd on and
one backward pass from the sum of the outputs, then a few warm ones.

    python bench/grads_plain.py MODEL_FILE

Prints one JSON line: import_ms, forward_ms, backward_ms, cold_ms (forward + backward, cold),
warm_ms (median of 5), threads, torch.
"""

import importlib.util
import json
import statistics
import sys
import time

t0 = time.perf_counter()
import torch  # noqa: E402

import_ms = (time.perf_counter() - t0) * 1e3
spec = importlib.util.spec_from_file_location("bench_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
model = mod.build_model()
x = mod.example_input()
args = x if isinstance(x, tuple) else (x,)


def lifted():
    return tuple(a.detach().requires_grad_(True).clone() if isinstance(a, torch.Tensor) and a.is_floating_point()
                 else a for a in args)


def step():
    inputs = lifted()
    t = time.perf_counter()
    out = model(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    total = sum(o.sum() for o in outs if isinstance(o, torch.Tensor) and o.requires_grad)
    forward = time.perf_counter() - t
    t = time.perf_counter()
    torch.autograd.backward(total)
    return forward * 1e3, (time.perf_counter() - t) * 1e3


with torch.enable_grad():
    forward_ms, backward_ms = step()
    warm = [sum(step()) for _ in range(5)]
print(json.dumps({"import_ms": import_ms, "forward_ms": forward_ms, "backward_ms": backward_ms,
                  "cold_ms": forward_ms + backward_ms, "warm_ms": statistics.median(warm),
                  "threads": torch.get_num_threads(), "torch": torch.__version__}))
