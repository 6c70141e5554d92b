"""Blocks of the direct file reserved ahead of the writes (torchlens_agent/prealloc.py)."""

import os
import sys

import numpy as np
import pytest

from torchlens_agent import prealloc
from torchlens_agent.prealloc import MAX_STEP, MIN_STEP, Preallocator, filesystem_type, wanted

EXT4, TMPFS, BTRFS = 0xEF53, 0x01021994, 0x9123683E


def test_only_ext4_reserves_unless_the_environment_decides():
    assert wanted(EXT4, "") is True
    assert wanted(TMPFS, "") is False, "tmpfs: a reservation clears pages the writes then fill (slower)"
    assert wanted(BTRFS, "") is False and wanted(None, "") is False
    assert wanted(TMPFS, "on") is True and wanted(EXT4, "off") is False


class FakeFallocate:
    def __init__(self, refuse_after=None):
        self.calls = []
        self.refuse_after = refuse_after

    def __call__(self, fd, offset, length):
        if self.refuse_after is not None and len(self.calls) >= self.refuse_after:
            return 28  # ENOSPC
        self.calls.append((offset, length))
        return 0


def test_reservations_run_ahead_contiguously_doubling_up_to_the_cap():
    fake = FakeFallocate()
    p = Preallocator(-1, 1000, fallocate=fake, forced="on")
    ends = [1000 + k * (1 << 20) for k in range(1, 400)]  # 399 MiB written in 1 MiB pieces
    for end in ends:
        p.cover(end)
        assert p.end >= end, "a write ran past the reserved blocks"
    pos = 1000
    for offset, length in fake.calls:  # each reservation continues the last, none overlaps
        assert offset == pos
        pos += length
    lengths = [length for _, length in fake.calls]
    assert lengths[0] == MIN_STEP and lengths[1] == MIN_STEP and lengths[2] == 2 * MIN_STEP
    assert max(lengths) == MAX_STEP and lengths[-1] == MAX_STEP
    assert len(fake.calls) < 20, "one reservation per write would cost a system call per piece"


def test_a_refused_reservation_turns_it_off_for_the_rest_of_the_file():
    fake = FakeFallocate(refuse_after=1)
    p = Preallocator(-1, 0, fallocate=fake, forced="on")
    p.cover(100)
    p.cover(MIN_STEP + 1)  # refused: no space, or no support
    assert p.on is False and p.end == MIN_STEP
    p.cover(10 * MIN_STEP)
    assert len(fake.calls) == 1


def test_off_by_environment_reserves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHLENS_AGENT_PREALLOCATE", "off")
    with open(tmp_path / "f", "wb") as f:
        p = Preallocator(f.fileno(), 0)
        p.cover(1 << 20)
        assert p.on is False and os.fstat(f.fileno()).st_size == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fstatfs and fallocate are Linux's")
def test_the_filesystem_type_is_read_from_the_descriptor(tmp_path):
    if os.path.isdir("/dev/shm"):
        path = f"/dev/shm/torchlens-prealloc-{os.getpid()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            assert filesystem_type(fd) == TMPFS
        finally:
            os.close(fd)
            os.unlink(path)
    fd = os.open(str(tmp_path / "f"), os.O_WRONLY | os.O_CREAT)
    try:
        assert isinstance(filesystem_type(fd), int)
    finally:
        os.close(fd)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fstatfs and fallocate are Linux's")
def test_direct_writes_land_whole_in_reserved_blocks(tmp_path, monkeypatch):
    """With the reservation forced on, every payload is at its offset with its CRC, and the file
    reaches past the last write (the CLI truncates it when it closes the .npz)."""
    import zlib

    from torchlens_agent.wire import Wire

    monkeypatch.setenv("TORCHLENS_AGENT_PREALLOCATE", "on")
    target = tmp_path / "activations.npz"
    target.write_bytes(b"")
    wire = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    wire.open_direct(str(target), 64)
    reserving = wire._writer.prealloc
    assert reserving is not None and reserving.on
    fd = wire._writer.direct.fd if wire._writer.direct is not None else None
    if reserving.fallocate is None or fd is None or filesystem_type(fd) is None:
        pytest.skip("no fallocate here")
    rng = np.random.default_rng(0)
    payloads, placed = [], []
    for pid, n in enumerate([5, 70_000, 3 << 20, 9 << 20, 1000], start=1):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        record = {"type": "pass", "id": pid}
        wire.place(record, n, 1)
        wire.send_data(pid, data.data)
        payloads.append(data)
        placed.append(record["at"])
    crcs = {pid: crc for pid, crc in wire.finish_direct() or []}
    if not reserving.on:
        pytest.skip("this filesystem refused fallocate")
    blob = target.read_bytes()
    for pid, (data, at) in enumerate(zip(payloads, placed), start=1):
        assert blob[at : at + data.nbytes] == data.tobytes()
        assert crcs[pid] == zlib.crc32(data.tobytes())
    assert len(blob) == reserving.end > placed[-1] + payloads[-1].nbytes
    assert reserving.calls <= 4


def test_no_system_fallocate_means_no_reservation(monkeypatch, tmp_path):
    monkeypatch.setattr(prealloc, "system_fallocate", lambda: None)
    with open(tmp_path / "f", "wb") as f:
        assert Preallocator(f.fileno(), 0, forced="on").on is False
