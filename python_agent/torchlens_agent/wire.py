"""The agent's side of the wire (docs/wire.md): length-prefixed msgpack headers plus raw payloads.

`take_over_stdio` must run before any user code is imported: it moves the real stdin/stdout to
private descriptors so that nothing the user's code prints or reads can reach the protocol.
"""

import os
import struct
import sys
import time
from typing import Any, Dict, Optional

import msgpack

CHUNK_BYTES = 16 << 20  # one data frame's payload at most
MAX_HEADER = 16 << 20
_FLUSH_BYTES = 256 << 10  # small frames are batched up to this size...
_FLUSH_SECONDS = 0.05  # ...or this age, so the CLI's progress keeps moving
_LEN = struct.Struct("<I")


class WireClosed(Exception):
    """The CLI closed its end of the pipe."""


class Wire:
    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buf = bytearray()
        self._buf_since = time.perf_counter()
        self._packer = msgpack.Packer(use_bin_type=True)

    # -- sending --------------------------------------------------------------------------

    def send(self, header: Dict[str, Any], *, flush: bool = False) -> None:
        """Queue one payload-less frame; it leaves when the batch is large or old enough."""
        packed = self._packer.pack(header)
        buf = self._buf
        if not buf:
            self._buf_since = time.perf_counter()
        buf += _LEN.pack(len(packed))
        buf += packed
        if flush or len(buf) >= _FLUSH_BYTES or time.perf_counter() - self._buf_since > _FLUSH_SECONDS:
            self.flush()

    def send_data(self, pass_id: int, payload: memoryview) -> None:
        """Send a pass's bytes as data frames of at most CHUNK_BYTES each, without copying them."""
        total = len(payload)
        offset = 0
        while True:
            n = min(CHUNK_BYTES, total - offset)
            packed = self._packer.pack({"type": "data", "id": pass_id, "nbytes": n})
            self._buf += _LEN.pack(len(packed))
            self._buf += packed
            if n < 4096:  # tiny payloads ride in the batch
                self._buf += payload[offset : offset + n]
            else:
                self.flush()
                self._write_all(payload[offset : offset + n])
            offset += n
            if offset >= total:
                break
        if len(self._buf) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data = self._buf
            self._buf = bytearray()
            self._write_all(memoryview(data))

    def _write_all(self, view: memoryview) -> None:
        fd = self.write_fd
        try:
            while len(view):
                written = os.write(fd, view)
                view = view[written:]
        except BrokenPipeError as exc:
            raise WireClosed("the CLI closed the connection") from exc

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
