"""Large pieces far into a run go to the device with O_DIRECT (torchlens_agent/directio.py): their
bytes must land exactly as buffered writes would put them, heads and tails included, the head
room the CLI owns untouched, and a filesystem that refuses O_DIRECT must only cost the speed."""

import errno
import mmap
import os
import sys
import zlib

import numpy as np
import pytest

from torchlens_agent import directio
from torchlens_agent.directio import (ALIGN, DIRECT_FROM, DIRECT_MIN, LOCAL_FROM, DirectWriter, direct_from,
                                      wants_direct)
from torchlens_agent.wire import CHUNK_BYTES, Wire

linux_only = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")


def _supports_direct(path) -> bool:
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    os.unlink(str(path))
    return True


@pytest.fixture
def direct_dir(tmp_path):
    if not hasattr(os, "O_DIRECT") or not _supports_direct(tmp_path / "probe"):
        pytest.skip("this filesystem takes no O_DIRECT writes")
    return tmp_path


EXT4, TMPFS, NFS = 0xEF53, 0x01021994, 0x6969


@linux_only
def test_auto_goes_direct_early_on_local_disks_late_elsewhere_and_never_on_tmpfs(monkeypatch):
    monkeypatch.delenv("TORCHLENS_AGENT_DIRECT_IO", raising=False)
    assert direct_from(EXT4) == LOCAL_FROM < DIRECT_FROM
    assert direct_from(NFS) == DIRECT_FROM
    assert direct_from(None) == DIRECT_FROM
    assert direct_from(TMPFS) is None, "on tmpfs the page cache is the file"


@linux_only
def test_the_environment_overrides_the_filesystems_default(monkeypatch):
    monkeypatch.setenv("TORCHLENS_AGENT_DIRECT_IO", "off")
    assert direct_from(EXT4) is None
    monkeypatch.setenv("TORCHLENS_AGENT_DIRECT_IO", "on")
    assert direct_from(TMPFS) == 0
    monkeypatch.setenv("TORCHLENS_AGENT_DIRECT_IO", "16")
    assert direct_from(NFS) == 16 << 20
    assert direct_from(EXT4, forced="auto") == LOCAL_FROM


def test_a_piece_is_laid_out_for_o_direct_only_past_the_start_and_when_its_middle_is_long_enough():
    assert not wants_direct(0, DIRECT_MIN, 0), "a piece whose aligned middle may be under DIRECT_MIN"
    assert wants_direct(0, 4 * DIRECT_MIN, 0)
    assert not wants_direct(0, 4 * DIRECT_MIN, None)
    assert not wants_direct(DIRECT_FROM - 8 * DIRECT_MIN, 4 * DIRECT_MIN, DIRECT_FROM), "before the start"


@linux_only
def test_aligned_middles_go_direct_and_every_byte_lands_where_a_buffered_write_puts_it(direct_dir):
    target = direct_dir / "activations.npz"
    size = 24 << 20
    target.write_bytes(b"\xab" * size)  # what no write covers must stay 0xab
    fd = os.open(str(target), os.O_WRONLY)
    writer = DirectWriter(str(target), fd, 0)
    buf = mmap.mmap(-1, CHUNK_BYTES + ALIGN)
    arr = np.frombuffer(buf, dtype=np.uint8)
    base = arr.ctypes.data
    rng = np.random.default_rng(5)
    want = bytearray(b"\xab" * size)
    # (file offset, length): unaligned both ends, aligned both ends, a tail only, too short to go direct
    pieces = [(100, (3 << 20) + 333), (8 << 20, 2 << 20), ((11 << 20) + 4096, (1 << 20) + 4097 + 4096), (20 << 20, 5000)]
    for offset, n in pieces:
        start = (offset - base) % ALIGN  # the remainder put_copy lays a piece at
        data = rng.integers(0, 256, n, dtype=np.uint8)
        arr[start:start + n] = data
        writer.write(memoryview(buf)[start:start + n], offset, base + start)
        want[offset:offset + n] = data.tobytes()
    writer.close()  # and the descriptor it was given
    assert target.read_bytes() == bytes(want)
    assert writer.on and writer.direct_bytes >= (6 << 20), writer.direct_bytes


@linux_only
def test_a_piece_whose_memory_is_not_at_its_offsets_remainder_is_written_buffered(direct_dir):
    target = direct_dir / "f"
    target.write_bytes(b"")
    fd = os.open(str(target), os.O_WRONLY)
    writer = DirectWriter(str(target), fd, 0)
    buf = mmap.mmap(-1, 4 << 20)
    data = np.frombuffer(buf, dtype=np.uint8)
    data[:] = 9
    writer.write(memoryview(buf)[1:(3 << 20) + 1], 0, np.frombuffer(buf, dtype=np.uint8).ctypes.data + 1)
    writer.write(memoryview(buf)[: 3 << 20], 3 << 20, None)  # an address nobody knows
    writer.close()  # and the descriptor it was given
    assert writer.direct_bytes == 0 and writer.on, "skipped, not refused by the kernel and turned off"
    assert target.read_bytes() == b"\x09" * (6 << 20)


@linux_only
@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_a_filesystem_that_refuses_o_direct_gets_the_bytes_buffered(tmp_path, monkeypatch, refused_at):
    target = tmp_path / "f"
    target.write_bytes(b"")
    fd = os.open(str(target), os.O_WRONLY)
    real_open, real_pwrite = os.open, os.pwrite
    direct_fds = set()

    def fake_open(path, flags, *args):
        if flags & os.O_DIRECT:
            if refused_at == "open":
                raise OSError(errno.EINVAL, "Invalid argument")
            opened = real_open(path, flags & ~os.O_DIRECT, *args)
            direct_fds.add(opened)
            return opened
        return real_open(path, flags, *args)

    def fake_pwrite(fd_, view, offset):
        if fd_ in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd_, view, offset)

    monkeypatch.setattr(directio.os, "open", fake_open)
    monkeypatch.setattr(directio.os, "pwrite", fake_pwrite)
    writer = DirectWriter(str(target), fd, 0)
    buf = mmap.mmap(-1, 8 << 20)
    arr = np.frombuffer(buf, dtype=np.uint8)
    arr[:] = np.arange(arr.size, dtype=np.uint64).astype(np.uint8)
    writer.write(memoryview(buf)[: 4 << 20], 0, arr.ctypes.data)
    writer.write(memoryview(buf)[4 << 20 :], 4 << 20, arr.ctypes.data + (4 << 20))
    writer.close()  # and the descriptor it was given
    assert writer.on is False and writer.direct_bytes == 0
    assert target.read_bytes() == arr.tobytes()


@linux_only
@pytest.mark.parametrize("mode", ["on", "off"])
def test_a_wire_stream_of_large_copied_and_owned_payloads_lands_with_its_crcs(direct_dir, monkeypatch, mode):
    """Through Wire: copies laid out in the pool at their offsets' remainders, owned pieces copied
    into the pool when they would go direct, chunked payloads, small ones between them; with `on`
    most bytes must go direct, with `off` none."""
    monkeypatch.setenv("TORCHLENS_AGENT_DIRECT_IO", mode)
    target = direct_dir / "activations.npz"
    size = 80 << 20
    target.write_bytes(b"\xab" * size)
    wire = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    wire.open_direct(str(target), 100)
    direct = wire._writer.direct
    assert direct is not None
    rng = np.random.default_rng(2)
    want = {}
    sizes = [(3 << 20) + 17, 40, CHUNK_BYTES + (5 << 20) + 3, 1000, (2 << 20) + 1, (7 << 20) + 4095, 64]
    for pid, n in enumerate(sizes, start=1):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        record = {"type": "pass", "id": pid}
        wire.place(record, n, 1)
        wire.send_data(pid, data.data, owned=pid % 2 == 0)
        want[pid] = (record["at"], data.tobytes())
        if pid % 2:
            data[:] = 0  # a copied piece's tensor changing after it was sent
    crcs = {pid: crc for pid, crc in wire.finish_direct() or []}
    blob = target.read_bytes()
    assert set(blob[:want[1][0]]) == {0xAB}, "the first pass's head room belongs to the CLI"
    for pid, (at, payload) in want.items():
        assert blob[at:at + len(payload)] == payload, pid
        assert crcs[pid] == zlib.crc32(payload), pid
    total = sum(sizes)
    if mode == "on":
        assert direct.direct_bytes > 0.9 * total, (direct.direct_bytes, total)
    else:
        assert direct.direct_bytes == 0


def test_a_direct_payload_of_several_pieces_has_its_later_pieces_start_on_a_file_block(tmp_path):
    """Only a large payload's own head and tail may be partial blocks (written buffered beside the
    O_DIRECT middles); its pieces cover it in order, each at most CHUNK_BYTES."""
    target = tmp_path / "activations.npz"
    target.write_bytes(b"\xab" * (4 * CHUNK_BYTES))
    wire = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    wire.open_direct(str(target), 100)
    pieces = []
    put_copy = wire._writer.put_copy

    def recording(view, offset=None, pid=0, joins=False, grow=False):
        pieces.append((offset, len(view), grow))
        put_copy(view, offset, pid, joins, grow)

    wire._writer.put_copy = recording
    n = 2 * CHUNK_BYTES + 12345
    data = np.arange(n, dtype=np.uint8)
    record = {"type": "pass", "id": 1}
    wire.place(record, n, 1)
    wire.send_data(1, data.data)
    wire.finish_direct()
    at = record["at"]
    assert at % ALIGN, "the test needs a payload starting mid-block"
    assert [p[0] for p in pieces] == [at] + [at + sum(q[1] for q in pieces[:i]) for i in range(1, len(pieces))]
    assert sum(p[1] for p in pieces) == n and all(p[1] <= CHUNK_BYTES for p in pieces)
    assert all(offset % ALIGN == 0 for offset, _, _ in pieces[1:]), pieces
    assert all(grow for _, _, grow in pieces), "a payload of several pieces may grow the pool"
    assert target.read_bytes()[at:at + n] == data.tobytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="O_DIRECT is Linux's")
def test_pool_buffers_are_page_aligned_with_room_for_a_chunk_at_any_remainder():
    from torchlens_agent.wire import _PoolBuffer

    buffer = _PoolBuffer()
    assert buffer.address % ALIGN == 0
    assert len(buffer.array) >= CHUNK_BYTES + ALIGN - 1
