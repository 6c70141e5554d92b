"""The plain forward pass that `bench/speed.mjs` holds torchlens's captured forward against: a fresh
process imports torch, builds the model and its input, and runs one cold forward pass under
torch.no_grad() (as `torchlens extract` runs it without --grad), then a few warm ones.

    python bench/speed_plain.py MODEL_FILE

Prints one JSON line: import_ms, build_ms, cold_ms, warm_ms (median of 5), threads, torch, peak_mb.
"""

import importlib.util
import json
import resource
import statistics
import sys
import time

t0 = time.perf_counter()
import torch  # noqa: E402

import_ms = (time.perf_counter() - t0) * 1e3
spec = importlib.util.spec_from_file_location("bench_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
t = time.perf_counter()
model = mod.build_model()
x = mod.example_input()
args = x if isinstance(x, tuple) else (x,)
build_ms = (time.perf_counter() - t) * 1e3
with torch.no_grad():
    t = time.perf_counter()
    model(*args)
    cold_ms = (time.perf_counter() - t) * 1e3
    warm = []
    for _ in range(5):
        t = time.perf_counter()
        model(*args)
        warm.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"import_ms": import_ms, "build_ms": build_ms, "cold_ms": cold_ms,
                  "warm_ms": statistics.median(warm), "threads": torch.get_num_threads(),
                  "torch": torch.__version__,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
