"""The agent's side of the wire (docs/wire.md): length-prefixed msgpack headers plus raw payloads.

`take_over_stdio` must run before any user code is imported: it moves the real stdin/stdout to
private descriptors so that nothing the user's code prints or reads can reach the protocol.
"""

import os
import queue
import struct
import sys
import threading
import time
from typing import Any, Dict, Optional, Tuple

import msgpack
import numpy as np

CHUNK_BYTES = 16 << 20  # one data frame's payload at most
MAX_HEADER = 16 << 20
_FLUSH_BYTES = 256 << 10  # small frames are batched up to this size...
_FLUSH_SECONDS = 0.05  # ...or this age, so the CLI's progress keeps moving
INLINE_BYTES = 64 << 10  # payloads up to this size are copied into the batch: a copy costs less than a write
_LEN = struct.Struct("<I")


class WireClosed(Exception):
    """The CLI closed its end of the pipe."""


class _Writer:
    """Writes to the pipe from a thread of its own, so the forward pass goes on computing while the
    bytes of earlier passes are still on their way (os.write releases the GIL).

    Items are written in the order they are queued. A tensor's bytes are queued as a copy in one of
    a few reusable buffers (the tensor may change in place after it is recorded), so what waits in
    the queue stays under POOL_BUFFERS x CHUNK_BYTES whatever the size of the activations; bytes
    the agent made itself (`owned`) are queued as they are.
    """

    POOL_BUFFERS = 3

    def __init__(self, fd: int):
        self.fd = fd
        self.items: "queue.Queue[Optional[Tuple[memoryview, Optional[np.ndarray]]]]" = queue.Queue()
        self.free: "queue.Queue[np.ndarray]" = queue.Queue()
        self.pool_made = 0
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="torchlens-wire", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.items.get()
            try:
                if item is None:
                    return
                view, buffer = item
                if self.error is None:
                    try:
                        _write_all(self.fd, view)
                    except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                        self.error = exc
                if buffer is not None:
                    self.free.put(buffer)
            finally:
                self.items.task_done()

    def check(self) -> None:
        if self.error is not None:
            if isinstance(self.error, (BrokenPipeError, WireClosed)):
                raise WireClosed("the CLI closed the connection") from self.error
            raise self.error

    def put(self, view: memoryview) -> None:
        self.check()
        self.items.put((view, None))

    def put_copy(self, view: memoryview) -> None:
        """Queue a copy of view (at most CHUNK_BYTES), in a pool buffer: waits while all are queued."""
        self.check()
        if self.free.empty() and self.pool_made < self.POOL_BUFFERS:
            self.pool_made += 1
            buffer = np.empty(CHUNK_BYTES, dtype=np.uint8)
        else:
            buffer = self.free.get()
        n = len(view)
        buffer[:n] = np.frombuffer(view, dtype=np.uint8)
        self.items.put((buffer.data[:n], buffer))

    def drain(self) -> None:
        self.items.join()
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
                    self._writer.put_copy(piece)
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
    _grow_pipe(write_fd)
    return Wire(read_fd, write_fd)


def _grow_pipe(fd: int) -> None:
    """A larger pipe buffer means fewer context switches per megabyte (Linux only; best effort)."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(int(f.read()), 4 << 20)
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError, ImportError):
        pass
