"""The agent's side of the wire (docs/wire.md): length-prefixed msgpack headers plus raw payloads.

`take_over_stdio` must run before any user code is imported: it moves the real stdin/stdout to
private descriptors so that nothing the user's code prints or reads can reach the protocol.
"""

import mmap
import os
import queue
import struct
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import zlib

import msgpack
import numpy as np

from . import directio
from .crc import crc32
from .directio import ALIGN, PIECE_MIN, DirectWriter
from .prealloc import Preallocator, filesystem_type

# One data frame's payload, one direct piece and one copy buffer at most. Fresh memory is dear: on
# the 2-core VM of bench/RESULTS.md a copy of 34 MB into untouched pages takes 27 ms against 3 ms
# into touched ones (page faults), so the pool is a few small buffers, faulted in before the
# forward pass and reused, not as many bytes as the activations take
CHUNK_BYTES = 4 << 20
MAX_HEADER = 16 << 20
_FLUSH_BYTES = 256 << 10  # small frames are batched up to this size...
_FLUSH_SECONDS = 0.05  # ...or this age, so the CLI's progress keeps moving
INLINE_BYTES = 64 << 10  # payloads up to this size are copied into the batch: a copy costs less than a write
# Direct pieces are handed to the writer thread in batches of about this many bytes or pieces: one
# wake-up of it (and one round of its contention for the GIL) per batch, not per pass
_BATCH_BYTES = 1 << 20
_BATCH_PIECES = 128
_SMALL_CRC = 8 << 10  # below this, zlib's crc32 costs less than a call into ISA-L through ctypes
# A direct piece copied next to the one before it in the file is laid out in its copy buffer as in
# the file, the head room between them included, when that room is at most this: the writer then
# writes both with one pwrite (`_Writer._write_run`). The room's bytes are whatever the buffer held;
# the CLI writes the entry's headers over all of it when it closes the .npz (docs/wire.md).
_JOIN_ROOM = 4096
_LEN = struct.Struct("<I")
_MAKE_BUFFER = ("make a pool buffer",)  # a writer-thread item: `_Writer.prepare`


def head_room(ndim: int) -> int:
    """Bytes the agent leaves free before a payload it writes into the CLI's .npz itself (docs/wire.md,
    "Direct writes"): room for the zip local header with its longest name and the .npy header."""
    return 448 + 32 * ndim


def _align64(n: int) -> int:
    return (n + 63) // 64 * 64


class _PoolBuffer:
    """One reusable copy buffer; several payloads share it, and it is free again once every piece
    copied into it is written and the copier has moved on (`sealed`)."""

    def __init__(self, touch: bool = False) -> None:
        # page-aligned (anonymous mmap), and ALIGN longer than a chunk: a piece written with
        # O_DIRECT is laid out at its file offset's remainder modulo ALIGN (directio.py)
        self.array = np.frombuffer(mmap.mmap(-1, CHUNK_BYTES + ALIGN), dtype=np.uint8)
        self.address: int = self.array.ctypes.data
        if touch:  # fault its pages in now, off the copying thread's path (4096 faults per buffer)
            self.array.fill(0)
        self.used = 0
        self.pieces = 0  # queued pieces not yet written
        self.sealed = False
        self.file_end: Optional[int] = None  # where in the direct file the last piece copied here ends


class WireClosed(Exception):
    """The CLI closed its end of the pipe."""


class DirectWriteError(OSError):
    """Writing into the direct file (the CLI's .npz) failed, a full disk most often: reported to the
    CLI as an `error` frame of phase `write` with the errno's name, while the pipe stays usable."""

    phase = "write"


class _Writer:
    """Writes to the pipe, and to the direct file (the CLI's .npz), from a thread of its own, so the
    forward pass goes on computing while the bytes of earlier passes are still on their way
    (os.write, os.pwrite and the CRC of crc.py release the GIL).

    Items are written in the order they are queued. A tensor's bytes are queued as a copy in one of
    a few reusable buffers (the tensor may change in place after it is recorded); several payloads
    share a buffer, so what waits in the queue stays under POOL_BUFFERS x CHUNK_BYTES whatever the
    size of the activations, and a buffer is reused once all its pieces are written. Bytes the agent
    made itself (`owned`) are queued as they are. A piece for the direct file is written at its
    offset, and its CRC-32 is accumulated per pass (`crcs`), as the zip entry needs it. Direct
    pieces are staged and queued as one item per batch (`hand_over`): each item wakes this thread,
    and a woken thread contends with the forward pass for the GIL. Copies of direct pieces that
    follow each other in the file are laid out in their buffer as in the file (`put_copy`'s joins),
    so a run of them is one pwrite: the LSTM of bench/models (1705 passes of about 800 bytes) makes
    some 20 writes instead of 1705, and its agent's CPU time over the captured forward fell from 86
    to 62 ms (torch 2.13, medians of 10, `python3 bench/ab_extract.py`).
    """

    # READY_BUFFERS are made ahead and reused: a copier finding none free waits for the writer
    # (some 0.5 ms to write out 4 MiB into the page cache) rather than touch fresh memory (3 ms of
    # page faults per 4 MiB on the VM of bench/RESULTS.md). A payload of several pieces is
    # different: the forward pass cannot go on before all of it is copied, so waiting for the
    # writer stalls the compute; its copier may grow the pool to POOL_BUFFERS (ResNet-18 at batch
    # 8, 25 MB activations, torch 2.13: 438 ms captured while such copiers waited at 16 MiB until
    # the run had copied 64 MiB, 365 with this rule, 390 with the old pool of 3 x 16 MiB)
    READY_BUFFERS = 4
    POOL_BUFFERS = 12

    def __init__(self, fd: int):
        self.fd = fd
        self.items: "queue.Queue[Any]" = queue.Queue()  # a piece, a batch of pieces, _MAKE_BUFFER or None
        self.free: "queue.Queue[_PoolBuffer]" = queue.Queue()
        self.pool_made = 0
        self.current: Optional[_PoolBuffer] = None
        self.lock = threading.Lock()
        self.direct: Optional[DirectWriter] = None  # the direct file (the CLI's .npz), while one is open
        self.prealloc: Optional[Preallocator] = None  # the direct file's blocks reserved ahead of its writes
        self.crcs: Dict[int, int] = {}
        self.direct_error: Optional[DirectWriteError] = None
        self.direct_error_raised = False
        self.error: Optional[BaseException] = None
        self.staged: List[tuple] = []  # direct pieces not yet queued (hand_over)
        self.staged_bytes = 0
        self.last_direct_end: Optional[int] = None  # where the last direct piece queued ends in the file
        self.thread = threading.Thread(target=self._run, name="torchlens-wire", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.items.get()
            try:
                if item is None:
                    return
                if item is _MAKE_BUFFER:
                    self.free.put(_PoolBuffer(touch=True))
                    continue
                if isinstance(item, list):  # a batch of direct pieces
                    self._write_batch(item)
                else:
                    self._write_run([item])
            finally:
                self.items.task_done()

    def _write_batch(self, pieces: List[tuple]) -> None:
        """Write a batch of direct pieces, each run of pieces laid out in one buffer as in the file
        (`put_copy`'s joins) with one pwrite."""
        run = [pieces[0]]
        for piece in pieces[1:]:
            last = run[-1]
            buffer, pos = piece[1], piece[4]
            if (buffer is not None and buffer is last[1]
                    and pos - (last[4] + len(last[0])) == piece[2] - (last[2] + len(last[0])) >= 0):
                run.append(piece)
            else:
                self._write_run(run)
                run = [piece]
        self._write_run(run)

    def _write_run(self, run: List[tuple]) -> None:
        """Write one piece to the pipe, or pieces adjacent in the file and in one buffer (a single
        piece most often) at their offset in the direct file; errors are kept for `check`."""
        view, buffer, offset, _, pos = run[0]
        if self.error is None:
            try:
                if offset is None:
                    _write_all(self.fd, view)
                elif self.direct_error is None:
                    assert self.direct is not None, "a direct write without a direct file"
                    if len(run) > 1:
                        last = run[-1]
                        view = buffer.array.data[pos : last[4] + len(last[0])]
                    if self.prealloc is not None:
                        self.prealloc.cover(offset + len(view))
                    self.direct.write(view, offset, None if buffer is None else buffer.address + pos)
                    crcs = self.crcs
                    for piece, _, _, pid, _ in run:
                        crc = zlib.crc32 if len(piece) < _SMALL_CRC else crc32
                        crcs[pid] = crc(piece, crcs.get(pid, 0))
            except OSError as exc:
                if offset is None:
                    self.error = exc
                else:  # the file, not the pipe: the error frame can still be sent
                    self.direct_error = DirectWriteError(exc.errno, f"writing the run's arrays failed: {exc.strerror}")
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                self.error = exc
        if buffer is not None:
            for _ in run:
                self._release(buffer)

    def _release(self, buffer: _PoolBuffer) -> None:
        with self.lock:
            buffer.pieces -= 1
            if buffer.pieces or not buffer.sealed:
                return
        self.free.put(buffer)

    def check(self) -> None:
        if self.direct_error is not None and not self.direct_error_raised:
            self.direct_error_raised = True  # once: what follows is the error frame, over the pipe
            raise self.direct_error
        if self.error is not None:
            if isinstance(self.error, (BrokenPipeError, WireClosed)):
                raise WireClosed("the CLI closed the connection") from self.error
            raise self.error

    def yield_cores(self, busy_threads: int) -> bool:
        """Have this thread run under SCHED_IDLE (Linux) while `busy_threads` threads of a forward
        pass can keep every core this process may use busy: it then writes when a core is free
        instead of taking one from torch's intra-op threads, whose parallel loops wait for the
        slowest of them (2 cores, torch 2.13 at its default 2 threads, saved_ms medians of 10
        interleaved runs, `python3 bench/ab_extract.py MODEL 10 idle: normal:TORCHLENS_AGENT_WRITER=normal`:
        the GPT decoder 27 ms against 47, ResNet-18 at batch 1 75 against 102). With a core to spare
        (torch 1.13's one thread) it keeps its normal policy: an idle writer then only gives way to
        the CLI and the kernel's writeback, and was not measured to gain.
        `TORCHLENS_AGENT_WRITER=idle|normal` decides instead. Returns whether it now runs idle."""
        forced = os.environ.get("TORCHLENS_AGENT_WRITER", "")
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        idle = forced == "idle" or (forced != "normal" and busy_threads >= cores)
        setter = getattr(os, "sched_setscheduler", None)
        tid = self.thread.native_id
        if not idle or setter is None or tid is None:
            return False  # never back from idle: an unprivileged thread may not leave SCHED_IDLE
        try:
            setter(tid, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError):
            return False
        return True

    def put(self, view: memoryview, offset: Optional[int] = None, pid: int = 0) -> None:
        self.check()
        self._queue((view, None, offset, pid, 0))

    def _queue(self, item: tuple) -> None:
        """A pipe write is queued at once; a direct piece is staged until its batch is full."""
        if item[2] is None:
            self.items.put(item)
            return
        self.last_direct_end = item[2] + len(item[0])
        self.staged.append(item)
        self.staged_bytes += len(item[0])
        if self.staged_bytes >= _BATCH_BYTES or len(self.staged) >= _BATCH_PIECES:
            self.hand_over()

    def hand_over(self) -> None:
        """Queue the staged direct pieces as one item."""
        if self.staged:
            self.items.put(self.staged)
            self.staged = []
            self.staged_bytes = 0

    def prepare(self) -> None:
        """Have this thread make (and fault in) the next pool buffer before the copier needs it,
        up to READY_BUFFERS: all of them ahead of a capture with a direct file (`Wire.prepare_direct`),
        otherwise the next one when the copier takes the last ready one."""
        if self.pool_made < self.READY_BUFFERS:
            self.pool_made += 1
            self.items.put(_MAKE_BUFFER)

    def goes_direct(self, offset: int, n: int) -> bool:
        """Whether n bytes at `offset` of the direct file are laid out for O_DIRECT (directio.py);
        the length is compared first, so most small passes cost one comparison."""
        direct = self.direct
        return n >= PIECE_MIN and direct is not None and directio.wants_direct(offset, n, direct.start)

    def put_copy(self, view: memoryview, offset: Optional[int] = None, pid: int = 0, joins: bool = False,
                 grow: bool = False) -> None:
        """Queue a copy of view (at most CHUNK_BYTES) in a pool buffer: waits while all are in use,
        unless `grow` (a piece of a payload of several) and fewer than POOL_BUFFERS exist.
        `joins`: the direct file's bytes between the last direct piece and `offset` are only head
        room that the CLI fills at close (`Wire.place`), so the copy may follow the last piece in
        its buffer as in the file, and the two go out in one write."""
        self.check()
        n = len(view)
        buffer = self.current
        # a piece for O_DIRECT lies at its offset's remainder modulo ALIGN (directio.py); one that
        # joins the piece before it in the file keeps that piece's remainder, so it may stay joined
        align_to = offset if offset is not None and self.goes_direct(offset, n) else None
        start = 0
        if buffer is not None:
            start = buffer.used
            if (joins and offset is not None and buffer.file_end is not None
                    and buffer.file_end == self.last_direct_end and 0 <= offset - buffer.file_end <= _JOIN_ROOM):
                start += offset - buffer.file_end
            if align_to is not None:
                start += (align_to - buffer.address - start) % ALIGN
        if buffer is None or start + n > len(buffer.array):
            if buffer is not None:
                self._seal(buffer)
            if self.free.empty() and self.pool_made < (self.POOL_BUFFERS if grow else self.READY_BUFFERS):
                self.pool_made += 1
                buffer = _PoolBuffer()
            else:  # a buffer written out, or one this thread is preparing
                self.hand_over()  # the staged pieces may be what keeps the buffers in use
                buffer = self.free.get()
                buffer.used, buffer.sealed, buffer.file_end = 0, False, None
            if self.free.empty():
                self.prepare()
            self.current = buffer
            start = 0 if align_to is None else (align_to - buffer.address) % ALIGN
        buffer.array[start : start + n] = np.frombuffer(view, dtype=np.uint8)
        buffer.used = start + n
        buffer.file_end = None if offset is None else offset + n
        with self.lock:
            buffer.pieces += 1
        self._queue((buffer.array.data[start : start + n], buffer, offset, pid, start))

    def _seal(self, buffer: _PoolBuffer) -> None:
        with self.lock:
            buffer.sealed = True
            if buffer.pieces:
                return
        self.free.put(buffer)

    def drain_quietly(self) -> None:
        """Wait for every queued item (the staged ones too), raising nothing."""
        self.hand_over()
        self.items.join()

    def drain(self) -> None:
        self.drain_quietly()
        self.check()


def _write_all(fd: int, view: memoryview) -> None:
    try:
        while len(view):
            written = os.write(fd, view)
            view = view[written:]
    except BrokenPipeError as exc:
        raise WireClosed("the CLI closed the connection") from exc


class Wire:
    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buf = bytearray()
        self._buf_since = time.perf_counter()
        self._packer = msgpack.Packer(use_bin_type=True)
        self._writer = _Writer(write_fd)
        self._direct_end: Optional[int] = None  # where the next placed payload's head room starts
        # (pass id, offset, joins) of bytes to write directly: joins when only the pass's own head
        # room lies between them and the last direct piece (`_Writer.put_copy`)
        self._placed: Optional[Tuple[int, int, bool]] = None

    # -- direct writes (docs/wire.md) ---------------------------------------------------------

    def yield_cores(self, busy_threads: int) -> bool:
        """See `_Writer.yield_cores`: the writer thread out of the forward pass's way."""
        return self._writer.yield_cores(busy_threads)

    def prepare_direct(self) -> None:
        """A capture that writes its payloads directly is coming (the model is still loading):
        the writer thread makes and faults in the READY_BUFFERS copy buffers meanwhile, so the
        forward pass's copies into them pay no page faults (1025 per buffer)."""
        for _ in range(self._writer.READY_BUFFERS):
            self._writer.prepare()

    def open_direct(self, path: str, at: int) -> None:
        """Write large payloads into the CLI's .npz at `path` ourselves, from offset `at` on."""
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        fs_type = filesystem_type(fd)
        self._writer.direct = DirectWriter(path, fd, directio.direct_from(fs_type))
        self._writer.prealloc = Preallocator(fd, at, fs_type=fs_type)
        self._writer.last_direct_end = None  # nothing joins a piece of another file
        self._writer.crcs = {}
        self._writer.direct_error, self._writer.direct_error_raised = None, False
        self._direct_end = at

    def place(self, record: Dict[str, Any], nbytes: int, ndim: int) -> None:
        """Give a saved pass's record its place in the direct file (`at`), and `direct` when the
        agent writes its bytes itself; nothing without a direct file."""
        end = self._direct_end
        if end is None:
            return
        at = _align64(end + head_room(ndim))
        self._direct_end = at + nbytes
        record["at"] = at
        if nbytes:  # every payload: the CLI then handles only records (docs/wire.md)
            record["direct"] = True
            # after an empty pass (not direct: the CLI writes its headers during the run) it does not join
            self._placed = (record["id"], at, end == self._writer.last_direct_end)

    def finish_direct(self) -> Optional[List[List[int]]]:
        """Wait for every direct write, close the file; the CRC-32 of each directly written pass
        as `[[id, crc], ...]` (None without a direct file)."""
        if self._writer.direct is None:
            return None
        try:
            self.flush(wait=True)
        finally:
            self.close_direct()
        return [[pid, crc] for pid, crc in self._writer.crcs.items()]

    def close_direct(self) -> None:
        direct = self._writer.direct
        if direct is not None:
            self._writer.drain_quietly()  # no write of the thread may still use the descriptors
            self._writer.direct = None
            self._writer.prealloc = None
            self._writer.last_direct_end = None
            self._direct_end = None
            self._placed = None
            direct.close()

    # -- sending --------------------------------------------------------------------------

    def send(self, header: Dict[str, Any], *, flush: bool = False) -> None:
        """Queue one payload-less frame; it leaves when the batch is large or old enough. With
        flush, it and everything before it are written when this returns."""
        packed = self._packer.pack(header)
        buf = self._buf
        if not buf:
            self._buf_since = time.perf_counter()
        buf += _LEN.pack(len(packed))
        buf += packed
        if flush:
            self.flush(wait=True)
        elif len(buf) >= _FLUSH_BYTES or time.perf_counter() - self._buf_since > _FLUSH_SECONDS:
            self.flush()

    def send_data(self, pass_id: int, payload: memoryview, owned: bool = False) -> None:
        """Send a pass's bytes as data frames of at most CHUNK_BYTES each. Large pieces are copied
        (the tensor may change later) unless `owned`: bytes nobody else can change."""
        total = len(payload)
        placed = self._placed
        if placed is not None and placed[0] == pass_id:  # written into the .npz by the writer thread
            self._placed = None
            # the pieces after the first start on a block of the file: only the payload's own head
            # and tail are partial blocks, written buffered beside its O_DIRECT middles
            writer, at, grow = self._writer, placed[1], total > CHUNK_BYTES
            offset, end = 0, total if not grow else CHUNK_BYTES - at % ALIGN
            while offset < total:
                piece = payload[offset:end]
                if owned and not writer.goes_direct(at + offset, len(piece)):
                    writer.put(piece, at + offset, pass_id)
                else:
                    writer.put_copy(piece, at + offset, pass_id, joins=placed[2] or offset > 0, grow=grow)
                offset, end = end, min(end + CHUNK_BYTES, total)
            return
        offset = 0
        while True:
            n = min(CHUNK_BYTES, total - offset)
            packed = self._packer.pack({"type": "data", "id": pass_id, "nbytes": n})
            self._buf += _LEN.pack(len(packed))
            self._buf += packed
            if n <= INLINE_BYTES:  # small payloads ride in the batch
                self._buf += payload[offset : offset + n]
            else:
                self.flush()
                piece = payload[offset : offset + n]
                if owned:
                    self._writer.put(piece)
                else:
                    self._writer.put_copy(piece, grow=total > CHUNK_BYTES)
            offset += n
            if offset >= total:
                break
        if len(self._buf) >= _FLUSH_BYTES:
            self.flush()

    def flush(self, wait: bool = False) -> None:
        """Hand the batch to the writer; with wait, return once everything queued is written."""
        if self._buf:
            data = self._buf
            self._buf = bytearray()
            self._writer.put(memoryview(data))
        self._writer.hand_over()
        if wait:
            self._writer.drain()

    # -- receiving ------------------------------------------------------------------------

    def recv(self) -> Optional[Dict[str, Any]]:
        """Read one request frame; None at end of stream."""
        head = self._read_exact(4)
        if head is None:
            return None
        (length,) = _LEN.unpack(head)
        if length > MAX_HEADER:
            raise ValueError(f"request header of {length} bytes is too large")
        body = self._read_exact(length)
        if body is None:
            raise WireClosed("the CLI closed the connection mid-frame")
        return msgpack.unpackb(body, raw=False)

    def _read_exact(self, n: int) -> Optional[bytes]:
        chunks = []
        while n:
            chunk = os.read(self.read_fd, n)
            if not chunk:
                if chunks:
                    raise WireClosed("the CLI closed the connection mid-frame")
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def take_over_stdio() -> Wire:
    """Move the protocol to private descriptors; user code gets /dev/null for stdin and stderr for stdout."""
    sys.stdout.flush()
    read_fd = os.dup(0)  # os.dup makes non-inheritable descriptors: user subprocesses never get them
    write_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, "r")
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    _grow_send_buffer(write_fd)
    return Wire(read_fd, write_fd)


_SEND_BUFFER = 4 << 20


def _grow_send_buffer(fd: int) -> None:
    """A larger buffer on the descriptor to the CLI (a pipe's, or a socket's send buffer) means
    fewer context switches per megabyte, and fewer waits of the writer thread while the CLI is busy
    (Linux only; best effort). Node gives its child a Unix socket, not a pipe, with a send buffer
    of some 200 KB by default: the records of a small-op model outgrow it while the CLI is still
    decoding the first ones, and the writer thread then waits on the socket (the LSTM of
    bench/models: 444 KB of records, 5 writes of the frame batch took 23-50 ms in all, 0.2-8 ms
    with 4 MiB). The kernel caps SO_SNDBUF at net.core.wmem_max."""
    try:
        import socket
        import stat

        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            with socket.socket(fileno=os.dup(fd)) as sock:  # closing it closes the duplicate only
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < _SEND_BUFFER:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            return
    except (OSError, ValueError, ImportError):
        pass
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(int(f.read()), 4 << 20)
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError, ImportError):
        pass
