"""CRC-32 (zlib's polynomial, as zip entries need it) of the payloads the agent writes into the CLI's
.npz itself, as fast as this machine allows.

zlib's crc32 runs at 1.5-2 GB/s on the 2-core Xeon of bench/RESULTS.md, which made it about half
of the CPU a saved byte costs; Intel's ISA-L computes the same CRC with carry-less multiplies at
about 7.7 GB/s there. We use it when it is installed (the `isal` Python package, or the C library
libisal.so.2 through ctypes: Debian's `libisal2`, which scripts/setup.sh installs where it may),
and zlib's otherwise. Both release the GIL, so the writer thread's CRC runs beside the forward pass.
`TORCHLENS_AGENT_CRC=zlib` forces zlib's (to compare them).
"""

import ctypes
import os
import zlib
from typing import Callable, Optional, Tuple

import numpy as np

Crc32 = Callable[[memoryview, int], int]


def _from_isal_package() -> Optional[Crc32]:
    try:
        from isal import isal_zlib  # type: ignore[import-not-found]
    except ImportError:
        return None
    return isal_zlib.crc32


def _from_libisal() -> Optional[Crc32]:
    lib = None
    for name in ("libisal.so.2", "libisal.so", "libisal.dylib"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None or not hasattr(lib, "crc32_gzip_refl"):
        return None
    fn = lib.crc32_gzip_refl  # uint32_t crc32_gzip_refl(uint32_t init, const unsigned char *buf, uint64_t len)
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint64]

    def crc32(view: memoryview, value: int = 0) -> int:
        n = view.nbytes
        if n == 0:
            return value
        # the address of read-only bytes too (ctypes' from_buffer wants them writable)
        return fn(value, np.frombuffer(view, dtype=np.uint8).ctypes.data, n)

    return crc32


def _checked(candidate: Optional[Crc32]) -> Optional[Crc32]:
    """candidate, if it agrees with zlib on bytes whose CRC a wrong polynomial or bit order would miss."""
    if candidate is None:
        return None
    probe = memoryview(bytes(range(256)) * 17)
    try:
        ok = candidate(probe, 0) == zlib.crc32(probe) and candidate(probe[5:], zlib.crc32(probe[:5])) == zlib.crc32(probe)
    except (TypeError, ValueError, OSError):
        return None
    return candidate if ok else None


def _choose() -> Tuple[str, Crc32]:
    if os.environ.get("TORCHLENS_AGENT_CRC", "") != "zlib":
        for name, find in (("isal", _from_isal_package), ("libisal", _from_libisal)):
            fn = _checked(find())
            if fn is not None:
                return name, fn
    return "zlib", zlib.crc32


BACKEND, crc32 = _choose()
