"""What reserving a new file's blocks ahead (fallocate, as the agent's writer does on ext4:
python_agent/torchlens_agent/prealloc.py) does to the time of writing it, on this machine.

    python3 bench/prealloc_write.py [DIR] [--mb 256] [--runs 7]

Writes MB of bytes in 1 MiB pwrites into a fresh file in DIR (default: the temp dir), with no
reservation, and with reservations of 16 and 64 MiB ahead of the writes; each file is removed
outside the timed part. Prints the median (min-max) of the writes' time per variant, twice over.
Run it on the filesystem the runs go to: ext4 gains, tmpfs loses (prealloc.py's docstring).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python_agent"))
from torchlens_agent.prealloc import system_fallocate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=tempfile.gettempdir())
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    fallocate = system_fallocate()
    if fallocate is None:
        sys.exit("this system has no fallocate (Linux only)")
    piece = np.ones(1 << 20, np.uint8)
    total = a.mb << 20

    def one(step: int) -> float:
        path = os.path.join(a.dir, f"torchlens-prealloc-{os.getpid()}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            t0 = time.perf_counter()
            reserved = 0
            for off in range(0, total, len(piece)):
                if step and off + len(piece) > reserved:
                    errno = fallocate(fd, reserved, step)
                    if errno:
                        raise OSError(errno, "fallocate refused")
                    reserved += step
                os.pwrite(fd, piece, off)
            return time.perf_counter() - t0
        finally:
            os.close(fd)
            os.unlink(path)

    print(f"{a.mb} MB in 1 MiB pwrites into a fresh file in {a.dir}, {a.runs} runs each")
    for _ in range(2):
        for name, step in (("no reservation", 0), ("16 MiB ahead", 16 << 20), ("64 MiB ahead", 64 << 20)):
            ts = [one(step) * 1e3 for _ in range(a.runs)]
            print(f"  {name:15s} {statistics.median(ts):7.1f} ms ({min(ts):.1f}-{max(ts):.1f})")


if __name__ == "__main__":
    main()
