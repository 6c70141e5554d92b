"""The CRC-32 of the agent's direct writes (torchlens_agent/crc.py): every backend found on this
machine gives zlib's CRC, whole or accumulated piece by piece, on the kinds of buffers the writer
hands it; ISA-L is chosen where it is installed; TORCHLENS_AGENT_CRC=zlib forces zlib's."""

import ctypes
import os
import subprocess
import sys
import zlib
from typing import List, Tuple

import numpy as np
import pytest

from torchlens_agent import crc

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _libisal_loadable() -> bool:
    for name in ("libisal.so.2", "libisal.so", "libisal.dylib"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _backends() -> List[Tuple[str, crc.Crc32]]:
    found: List[Tuple[str, crc.Crc32]] = [("zlib", zlib.crc32)]
    for name, find in (("isal", crc._from_isal_package), ("libisal", crc._from_libisal)):
        fn = find()
        if fn is not None:
            found.append((name, fn))
    return found


@pytest.mark.parametrize("name,fn", _backends(), ids=[name for name, _ in _backends()])
def test_crc_backend_gives_zlibs_crc_whole_and_in_pieces(name, fn):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=3 * 1024 * 1024 + 17, dtype=np.uint8)
    view = memoryview(data.tobytes())
    expected = zlib.crc32(view)
    assert fn(view, 0) == expected
    running = 0
    for start in range(0, len(data), 1 << 20):  # the writer accumulates a pass's CRC piece by piece
        running = fn(view[start : start + (1 << 20)], running)
    assert running == expected
    assert fn(data.data[5:], 0) == zlib.crc32(view[5:])  # a numpy array's memory, as the pool's
    assert fn(memoryview(b""), 12345) == 12345  # nothing appended: the CRC so far


@pytest.mark.skipif(not _libisal_loadable(), reason="ISA-L (Debian's libisal2) is not installed here")
def test_crc_uses_isal_where_it_is_installed():
    assert crc.BACKEND in ("isal", "libisal")


def test_crc_env_forces_zlib():
    env = {**os.environ, "TORCHLENS_AGENT_CRC": "zlib", "PYTHONPATH": AGENT_ROOT}
    out = subprocess.run([sys.executable, "-c", "from torchlens_agent import crc; print(crc.BACKEND)"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "zlib"
