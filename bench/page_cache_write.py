"""How fast this machine puts bytes into fresh page-cache pages: pwrite of 268 MB (ResNet-18 at
batch 8, every pass) into a new file, 16 MiB at a time, five times, each file removed after.

    python3 bench/page_cache_write.py [MB]

On a VM whose host takes back the guest's free memory, the first write into pages the guest has not
touched lately pays the host's page faults too: seen here (2-core AMD EPYC VM, 2026-12-07) 0.28 GB/s
for the first of five, 3.8 GB/s for the next four, which reuse the pages the removed file freed.
That is what spreads the captured times of the large-activation rows of the speed benchmark (and
makes the second of two back-to-back extractions the slower one), whatever torchlens does.
"""
import os
import sys
import tempfile
import time

import numpy as np

n = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 268_000_000
src = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
path = os.path.join(tempfile.mkdtemp(prefix="torchlens-pagecache-"), "w.bin")
for k in range(5):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    view = memoryview(src)
    t, cpu = time.perf_counter(), time.thread_time()
    for off in range(0, n, 16 << 20):
        os.pwrite(fd, view[off:off + (16 << 20)], off)
    wall, cpu = time.perf_counter() - t, time.thread_time() - cpu
    os.close(fd)
    os.unlink(path)
    print(f"write {k + 1}: {n / 1e6:.0f} MB in {wall * 1e3:.0f} ms (CPU {cpu * 1e3:.0f} ms): {n / wall / 1e9:.2f} GB/s")
os.rmdir(os.path.dirname(path))
