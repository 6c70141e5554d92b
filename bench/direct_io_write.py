"""Buffered writes against O_DIRECT for a run's large pieces, on this machine: what
python_agent/torchlens_agent/directio.py chose its threshold (DIRECT_FROM) from.

    python3 bench/direct_io_write.py [DIR] [--mb 2000] [--piece-kb 16384] [--runs 3]

Writes MB of bytes in pieces of PIECE-KB from one page-aligned buffer (as the agent's pool buffers
are) into a fresh file in DIR (default: the temp dir) whose blocks are reserved first (as the
agent's writer does on ext4), buffered and with O_DIRECT, alternating; each file is removed
outside the timed part. Prints the median (min-max) of the writes' wall time and of the writing
thread's CPU time (kernel time included) per variant. Run it on the filesystem the runs go to,
at the run's size: the page cache's cost grows with the bytes that are new to it.
"""

import argparse
import mmap
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python_agent"))
from torchlens_agent.prealloc import system_fallocate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=tempfile.gettempdir())
    ap.add_argument("--mb", type=int, default=2000)
    ap.add_argument("--piece-kb", type=int, default=16 << 10)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if not hasattr(os, "O_DIRECT"):
        sys.exit("this system has no O_DIRECT (Linux only)")
    piece = a.piece_kb << 10
    buf = mmap.mmap(-1, piece)
    buf.write(b"\x07" * piece)
    view = memoryview(buf)
    total = a.mb << 20
    fallocate = system_fallocate()

    def one(direct: bool):
        path = os.path.join(a.dir, f"torchlens-directio-{os.getpid()}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o644)
        try:
            if fallocate is not None:
                fallocate(fd, 0, total)
            c0, t0 = time.thread_time(), time.perf_counter()
            for off in range(0, total, piece):
                os.pwrite(fd, view[: min(piece, total - off)], off)
            return (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3
        finally:
            os.close(fd)
            os.unlink(path)

    print(f"{a.mb} MB in {a.piece_kb} KiB pwrites into a fresh reserved file in {a.dir}, {a.runs} runs each")
    results = {"buffered": [], "O_DIRECT": []}
    for _ in range(a.runs):
        for name in results:
            results[name].append(one(name == "O_DIRECT"))
    for name, runs in results.items():
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        print(f"  {name:9s} wall {statistics.median(wall):8.1f} ms ({min(wall):.1f}-{max(wall):.1f})"
              f"   cpu {statistics.median(cpu):8.1f} ms ({min(cpu):.1f}-{max(cpu):.1f})")


if __name__ == "__main__":
    main()
