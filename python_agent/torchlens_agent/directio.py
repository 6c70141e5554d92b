"""Large payloads of a run written with O_DIRECT (Linux), past the page cache.

A buffered write into the page cache costs the writer a new page per 4 KiB: found, zeroed, filled,
later written back; once the dirty pages reach the kernel's limit (`vm.dirty_ratio`) the writer is
throttled to the disk's speed anyway, and on a VM whose host takes back the guest's free memory
each new page is also a fault in the host. A direct write hands the device the bytes in place. On
the AMD EPYC VM of bench/RESULTS.md (ext4 on virtio), one thread writing 16 MiB pieces into a fresh,
reserved file (`python3 bench/direct_io_write.py DIR --mb N`):

    8000 MB  buffered 22.1 s wall, 22.0 s CPU     O_DIRECT 4.6 s wall, 0.47 s CPU
    2000 MB  buffered  0.55 s                      O_DIRECT 1.2 s wall, 0.11 s CPU
     268 MB  buffered 33 ms                        O_DIRECT 152 ms wall, 19 ms CPU

and in whole extractions (saved_ms medians, interleaved, `python3 bench/ab_extract.py`): the 8 GB
bigconv 24.4 -> 15.9 s on torch 1.13 (the plain forward: 11.5 s) and 23.7 -> 16.0 s on torch 2.13
(plain 8.3 s), direct from 1 GiB on; ResNet-18 at batch 8 (268 MB) 519 -> 418 ms on torch 1.13 (the agent's CPU 739 ->
492 ms) and 456 -> 386 ms on torch 2.13, direct from 64 MiB on. Runs under 64 MiB (ResNet-18 at
batch 1, 34 MB; the GPT-style decoder) write as before.

So on a local block filesystem (ext2/3/4, xfs, btrfs, f2fs) the first LOCAL_FROM bytes of a run go
through the page cache as before (cheap for a small run, and still cached when `validate` reads
them) and large pieces after them go straight to the device. Elsewhere (NFS, FUSE, filesystems not
known) a direct write may be a synchronous trip over the network, so only a run past DIRECT_FROM
writes direct; on tmpfs and ramfs the page cache is the file, so never.

O_DIRECT wants the file offset, the length and the memory address aligned to the device's block;
ALIGN (4096) suits every device Linux runs on. A piece is written as its unaligned head and tail
through the ordinary descriptor and its aligned middle through a second descriptor opened with
O_DIRECT; the pool buffers are page-aligned and the copier lays a piece in its buffer at the same
remainder modulo ALIGN as its file offset (`_Writer.put_copy`), so the middle's memory is aligned
too. Only whole blocks of the payload (or of a run of joined payloads) go direct: the head room
before the first, where the CLI writes the entry's headers at close, shares no block with them.

A filesystem that refuses O_DIRECT (EINVAL at open or at the first write) turns it off for the file
and the writes go on buffered. `TORCHLENS_AGENT_DIRECT_IO=auto|on|off|<MiB>` decides otherwise:
`on` writes direct from the first byte, a number from that many MiB into the run.
"""

import errno
import os
from typing import Optional

ALIGN = 4096
LOCAL_FROM = 64 << 20  # on a local block filesystem the bytes of a run before this offset stay buffered
DIRECT_FROM = 1 << 30  # ...on a filesystem not known to be one
DIRECT_MIN = 1 << 20  # a piece's aligned middle shorter than this is written buffered
PIECE_MIN = DIRECT_MIN + 2 * ALIGN  # a piece at least this long has such a middle wherever it lies
# superblock magics (statfs's f_type)
_LOCAL_BLOCK = {0xEF53, 0x58465342, 0x9123683E, 0xF2F52010}  # ext2/3/4, xfs, btrfs, f2fs
_MEMORY = {0x01021994, 0x858458F6}  # tmpfs, ramfs

_O_DIRECT = getattr(os, "O_DIRECT", None)


def direct_from(fs_type: Optional[int], forced: Optional[str] = None) -> Optional[int]:
    """The file offset from which large pieces go direct on a filesystem of superblock magic
    `fs_type` (None: unknown), None for never; the environment's TORCHLENS_AGENT_DIRECT_IO, or
    `forced` (auto, on, off, or a number of MiB), may decide instead."""
    mode = os.environ.get("TORCHLENS_AGENT_DIRECT_IO", "auto") if forced is None else forced
    if _O_DIRECT is None or mode == "off":
        return None
    if mode == "on":
        return 0
    if mode.isdigit():
        return int(mode) << 20
    if fs_type in _MEMORY:
        return None
    return LOCAL_FROM if fs_type in _LOCAL_BLOCK else DIRECT_FROM


def wants_direct(offset: int, n: int, start: Optional[int]) -> bool:
    """A piece of n bytes at `offset` that should be laid out for a direct write (`start`: from
    `direct_from`)."""
    return start is not None and n >= PIECE_MIN and offset + n >= start + DIRECT_MIN


def aligned_address(offset: int, address: int) -> bool:
    """The piece's memory lies at the remainder of its file offset modulo ALIGN."""
    return (address - offset) % ALIGN == 0


class DirectWriter:
    """Writes into the direct file, the aligned middles of large pieces with O_DIRECT. It owns
    the file's descriptors; `write` runs on the writer thread only, `close` after its last write."""

    def __init__(self, path: str, fd: int, start: Optional[int]) -> None:
        self.path = path
        self.fd = fd  # the ordinary descriptor, for heads, tails and everything else
        self.start = start  # from `direct_from`: where in the file large pieces begin to go direct
        self.direct_fd: Optional[int] = None
        self.on = start is not None
        self.direct_bytes = 0  # written with O_DIRECT, for tests and the curious

    def write(self, view: memoryview, offset: int, address: Optional[int]) -> None:
        """Write view at offset; address: where view's memory lies (None: unknown, buffered)."""
        n = len(view)
        lo = -(-offset // ALIGN) * ALIGN
        hi = (offset + n) // ALIGN * ALIGN
        if (not self.on or address is None or hi - lo < DIRECT_MIN
                or not wants_direct(offset, n, self.start) or not aligned_address(offset, address)):
            pwrite_all(self.fd, view, offset)
            return
        fd = self._direct_fd()
        if fd is None:
            pwrite_all(self.fd, view, offset)
            return
        head, middle_end = lo - offset, hi - offset
        if head:
            pwrite_all(self.fd, view[:head], offset)
        try:
            pwrite_all(fd, view[head:middle_end], lo)
            self.direct_bytes += hi - lo
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.on = False  # the filesystem takes no direct writes after all
            pwrite_all(self.fd, view[head:middle_end], lo)
        if middle_end < n:
            pwrite_all(self.fd, view[middle_end:], hi)

    def _direct_fd(self) -> Optional[int]:
        if self.direct_fd is None and self.on:
            assert _O_DIRECT is not None
            try:
                self.direct_fd = os.open(self.path, os.O_WRONLY | _O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self.on = False
        return self.direct_fd

    def close(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None
        os.close(self.fd)


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
