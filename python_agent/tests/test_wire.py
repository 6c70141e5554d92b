"""The real agent process over its pipes (docs/wire.md): the hello, an extract whose model prints,
writes bytes to stdout and reads stdin without breaking the frame stream, large tensors in chunks,
and every failure as an `error` frame with the user's own traceback."""

import ctypes
import math
import mmap
import os
import platform

import numpy as np
import pytest
import torch

import torchlens_agent
from agent_testlib import extract_request, start_agent
from torchlens_agent.load import random_inputs
from torchlens_agent.wire import CHUNK_BYTES, Wire

TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
AGENT_DIR = os.path.dirname(os.path.abspath(torchlens_agent.__file__))

NOISY_MODEL = '''
import logging
import os
import sys
import warnings

import torch
from torch import nn

print("NOISY: printed at import")


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        print("NOISY: printed in forward")
        sys.stdout.buffer.write(b"NOISY-BINARY:\\x00\\x01\\x02\\xff\\xfe\\x93NUMPY\\n")
        sys.stdout.flush()
        os.write(1, b"NOISY: written to fd 1\\n")
        got = sys.stdin.read()
        raw = os.read(0, 64)
        print(f"NOISY: stdin gave {got!r} and fd 0 gave {raw!r}")
        warnings.warn("NOISY: a user warning")
        logging.getLogger("noisy").warning("NOISY: a log warning")
        return torch.relu(self.fc(x))


def build_model():
    torch.manual_seed(0)
    return Noisy()


def example_input():
    return torch.randn(2, 4)
'''

RAISING_MODEL = '''
import torch
from torch import nn


class Failing(nn.Module):
    def forward(self, x):
        y = torch.relu(x)
        raise ValueError("forward failed on purpose")  # RAISE-LINE


model = Failing()
'''

TORCH_RAISING_MODEL = '''
import torch
from torch import nn


class Mismatch(nn.Module):
    def forward(self, x):
        return x @ torch.ones(7, 7)  # RAISE-LINE


model = Mismatch()
'''

SYNTAX_ERROR_MODEL = "import torch\nx = 1\ndef broken(:\n    pass\n"

NO_MODEL = '''
import torch
from torch import nn


class Encoder(nn.Module):
    def forward(self, x):
        return x


def make_encoder():
    return Encoder()


thing = Encoder()
'''

BAD_EXAMPLE_INPUT_MODEL = '''
from torch import nn

model = nn.Linear(4, 3)


def example_input():
    raise RuntimeError("cannot build the example input")  # RAISE-LINE
'''

DOUBLE_MODEL = '''
from torch import nn


class Double(nn.Module):
    def forward(self, x):
        return x * 2


model = Double()
'''

SMALL_MODEL = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x)).sum(dim=1)


model = Small()
'''


def line_of(source: str, marker: str) -> int:
    return next(i for i, text in enumerate(source.splitlines(), 1) if marker in text)


def assert_user_frames_only(traceback):
    for frame in traceback:
        path = os.path.abspath(frame["file"])
        assert not path.startswith(TORCH_DIR), f"a torch frame leaked into the traceback: {frame}"
        assert not path.startswith(AGENT_DIR), f"an agent frame leaked into the traceback: {frame}"


def assert_data_follows_each_saved_record(run):
    headers = run.headers
    for i, h in enumerate(headers):
        if h["type"] != "pass" or not h["stored_nbytes"]:
            continue
        got, j = 0, i + 1
        while got < h["stored_nbytes"]:
            assert headers[j]["type"] == "data" and headers[j]["id"] == h["id"], \
                f"pass {h['id']}: expected its data frames right after the record, got {headers[j]}"
            got += headers[j]["nbytes"]
            j += 1
        assert got == h["stored_nbytes"]


# -- one extract with a noisy model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noisy")
    path = folder / "noisy.py"
    path.write_text(NOISY_MODEL)
    # The shutdown frame and junk after the request sit in the agent's stdin: if user code could
    # read the protocol pipe, it would see them.
    run = start_agent(extract_request(path), {"type": "shutdown"}, extra_stdin=b"PROTOCOL-BYTES" * 10)
    return run.wait()


def test_hello_comes_first_with_protocol_and_versions(noisy):
    hello = noisy.headers[0]
    assert hello["type"] == "hello"
    assert hello["protocol"] == torchlens_agent.PROTOCOL == 2
    assert hello["agent"] == torchlens_agent.AGENT_VERSION
    assert hello["python"] == platform.python_version()
    assert hello["torch"] == torch.__version__
    assert hello["numpy"] == np.__version__
    assert hello["devices"][0] == "cpu"
    assert hello["pid"] == noisy.proc.pid


def test_extract_streams_model_records_and_done_in_order(noisy):
    assert noisy.rc == 0, noisy.stderr.decode(errors="replace")
    kinds = [h["type"] for h in noisy.headers]
    assert kinds[0] == "hello" and kinds[1] == "model" and kinds[-1] == "done"
    assert "error" not in kinds
    model = noisy.headers[1]
    assert model["class"] == "Noisy"
    assert [m["address"] for m in model["modules"]] == ["", "fc"]
    fc = model["modules"][1]
    assert [(p["name"], p["shape"]) for p in fc["params"]] == [("weight", [3, 4]), ("bias", [3])]
    ops = noisy.of_type("pass")
    assert [(r["kind"], r["func"]) for r in ops] == [("input", "input"), ("op", "linear"), ("op", "relu"),
                                                    ("output", "output")]
    where = {h["id"]: i for i, h in enumerate(noisy.headers) if h["type"] == "pass"}
    input_at, linear_at, relu_at, output_at = (where[r["id"]] for r in ops)
    module_at = [i for i, k in enumerate(kinds) if k == "module"]
    assert [noisy.headers[i]["address"] for i in module_at] == ["fc", ""]
    assert input_at < linear_at < module_at[0] < relu_at < module_at[1] < output_at, kinds
    done = noisy.headers[-1]
    assert done["outputs"] == {"kind": "tensor", "id": ops[-1]["id"]}
    assert done["num_ops"] >= 2


def test_saved_bytes_arrive_after_each_record_and_are_consistent(noisy):
    assert_data_follows_each_saved_record(noisy)
    _, linear, relu, output = noisy.of_type("pass")
    assert linear["stored_dtype"] == "<f4" and linear["shape"] == [2, 3]
    assert np.array_equal(noisy.array(relu["id"]), np.maximum(noisy.array(linear["id"]), 0))
    assert np.array_equal(noisy.array(output["id"]), noisy.array(relu["id"]))


def test_user_prints_binary_writes_warnings_and_logs_go_to_stderr(noisy):
    err = noisy.stderr
    for text in (b"NOISY: printed at import", b"NOISY: printed in forward",
                 b"NOISY-BINARY:\x00\x01\x02\xff\xfe\x93NUMPY", b"NOISY: written to fd 1",
                 b"NOISY: a user warning", b"NOISY: a log warning"):
        assert text in err, f"{text!r} is missing from stderr"
    assert b"NOISY" not in noisy.stdout, "user output reached the protocol stream"


def test_user_code_reading_stdin_gets_end_of_file_not_the_protocol(noisy):
    assert b"NOISY: stdin gave '' and fd 0 gave b''" in noisy.stderr
    assert b"PROTOCOL-BYTES" not in noisy.stderr


# -- large tensors ---------------------------------------------------------------------------------

def test_large_tensors_arrive_in_bounded_chunks_that_reassemble(tmp_path):
    assert CHUNK_BYTES <= 64 << 20, "docs/wire.md caps a payload at 64 MiB"
    n = CHUNK_BYTES // 4 + 1_000_003  # float32 elements: more than one chunk
    path = tmp_path / "double.py"
    path.write_text(DOUBLE_MODEL)
    run = start_agent(extract_request(path, input={"kind": "shape", "shapes": [[n]], "dtype": "float32"},
                                      seed=3)).wait()
    assert run.rc == 0, run.stderr.decode(errors="replace")
    assert_data_follows_each_saved_record(run)
    inp, mul, out = run.of_type("pass")
    for rec in (inp, mul, out):
        frames = [h for h in run.of_type("data") if h["id"] == rec["id"]]
        assert rec["stored_nbytes"] == 4 * n
        assert len(frames) == math.ceil(4 * n / CHUNK_BYTES) > 1
        assert all(h["nbytes"] <= CHUNK_BYTES for h in frames)
    want = random_inputs([[n]], "float32", 3)[0][0].numpy()
    assert np.array_equal(run.array(inp["id"]), want)
    assert np.array_equal(run.array(mul["id"]), want * 2)
    assert np.array_equal(run.array(out["id"]), want * 2)


# -- failures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def failures(tmp_path_factory):
    """Start every failing agent at once (each imports torch), then collect them."""
    folder = tmp_path_factory.mktemp("failures")
    files = {}
    for name, source in [("raising", RAISING_MODEL), ("torch_raising", TORCH_RAISING_MODEL),
                         ("syntax", SYNTAX_ERROR_MODEL), ("nomodel", NO_MODEL), ("small", SMALL_MODEL),
                         ("bad_example", BAD_EXAMPLE_INPUT_MODEL)]:
        files[name] = folder / f"{name}.py"
        files[name].write_text(source)
    shape = {"kind": "shape", "shapes": [[2, 4]], "dtype": "float32"}
    requests = {
        "raising": [extract_request(files["raising"], input=shape)],
        "torch_raising": [extract_request(files["torch_raising"], input=shape)],
        "syntax": [extract_request(files["syntax"], input=shape)],
        "nomodel": [extract_request(files["nomodel"], input=shape)],
        "bad_example": [extract_request(files["bad_example"])],
        "unknown": [{"type": "frobnicate"}],
        "shutdown": [{"type": "shutdown"}],
    }
    if not torch.cuda.is_available():
        requests["no_cuda"] = [extract_request(files["small"], input=shape, device="cuda")]
    runs = {}
    names = list(requests)
    width = max(1, min(4, os.cpu_count() or 1))  # more at once only thrashes a small machine
    for start in range(0, len(names), width):
        batch = {name: start_agent(*requests[name]) for name in names[start:start + width]}
        for name, run in batch.items():
            runs[name] = run.wait()
    runs["files"] = files
    return runs


def the_error(run):
    assert run.rc not in (0, None), f"exit code {run.rc}"
    assert run.headers[0]["type"] == "hello"
    assert run.headers[-1]["type"] == "error", [h["type"] for h in run.headers]
    assert len(run.of_type("error")) == 1
    return run.headers[-1]


def test_forward_that_raises_gives_a_capture_error_with_the_users_frame(failures):
    err = the_error(failures["raising"])
    path = failures["files"]["raising"]
    assert err["phase"] == "capture" and err["exc_type"] == "ValueError"
    assert err["message"] == "forward failed on purpose"
    assert err["traceback"], "no traceback frames"
    assert_user_frames_only(err["traceback"])
    last = err["traceback"][-1]
    assert os.path.abspath(last["file"]) == str(path)
    assert last["line"] == line_of(RAISING_MODEL, "RAISE-LINE") and last["func"] == "forward"
    assert "raise ValueError" in last["text"]


def test_error_inside_a_torch_op_points_at_the_users_line(failures):
    err = the_error(failures["torch_raising"])
    assert err["phase"] == "capture" and err["exc_type"] == "RuntimeError"
    assert_user_frames_only(err["traceback"])
    last = err["traceback"][-1]
    assert os.path.abspath(last["file"]) == str(failures["files"]["torch_raising"])
    assert last["line"] == line_of(TORCH_RAISING_MODEL, "RAISE-LINE")


def test_syntax_error_is_a_load_error_with_its_line(failures):
    err = the_error(failures["syntax"])
    assert err["phase"] == "load" and err["exc_type"] == "SyntaxError"
    assert "line 3" in err["message"]
    assert any(os.path.abspath(f["file"]) == str(failures["files"]["syntax"]) and f["line"] == 3
               for f in err["traceback"])
    assert_user_frames_only(err["traceback"])
    assert err["hint"]


def test_missing_model_lists_what_the_file_defines(failures):
    err = the_error(failures["nomodel"])
    assert err["phase"] == "load"
    for name in ("Encoder", "make_encoder", "thing"):
        assert name in err["message"]
    assert "build_model" in err["hint"]


def test_cuda_request_without_cuda_is_a_clear_input_error(failures):
    if "no_cuda" not in failures:
        pytest.skip("this machine has CUDA")
    err = the_error(failures["no_cuda"])
    assert err["phase"] == "input" and "cuda" in err["message"].lower()
    assert err["hint"]
    assert not failures["no_cuda"].of_type("pass"), "ops were recorded before the device was refused"


def test_example_input_that_raises_is_an_input_error(failures):
    err = the_error(failures["bad_example"])
    assert err["exc_type"] == "RuntimeError"
    last = err["traceback"][-1]
    assert last["func"] == "example_input" and last["line"] == line_of(BAD_EXAMPLE_INPUT_MODEL, "RAISE-LINE")
    assert err["phase"] == "input"


def test_unknown_request_is_a_protocol_error(failures):
    err = the_error(failures["unknown"])
    assert err["phase"] == "internal" and "frobnicate" in err["message"]


def test_shutdown_request_exits_cleanly_after_hello(failures):
    run = failures["shutdown"]
    assert run.rc == 0
    assert [h["type"] for h in run.headers] == ["hello"]


def test_standby_agent_whose_stdin_closes_exits_quietly_without_importing_torch(tmp_path):
    # The CLI starts its later Python candidates in standby and closes their stdin once one is chosen.
    # Here `torch` is a package that the package check finds but that fails when imported: a standby
    # that imported it (or anything that does) would exit with its traceback.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('the standby imported torch')\n")
    run = start_agent(standby=True, extra_path=str(tmp_path)).wait(timeout=30)
    assert run.rc == 0 and run.stdout == b"" and run.stderr == b"", run.stderr.decode(errors="replace")


def test_woken_standby_agent_says_hello_and_serves_requests_with_the_wake_byte_kept_off_the_wire():
    # The wake byte is read from the descriptor itself: the frames right behind it must parse whole.
    run = start_agent({"type": "shutdown"}, standby=True, wake=b"G").wait(timeout=60)
    assert run.rc == 0, run.stderr.decode(errors="replace")
    assert [h["type"] for h in run.headers] == ["hello"]


# -- on a GPU ------------------------------------------------------------------------------------------

def test_extract_on_cuda_records_cuda_devices(tmp_path, cuda_device):
    path = tmp_path / "small.py"
    path.write_text(SMALL_MODEL)
    shape = {"kind": "shape", "shapes": [[2, 4]], "dtype": "float32"}
    run = start_agent(extract_request(path, input=shape, device=str(cuda_device))).wait()
    assert run.rc == 0, run.stderr.decode(errors="replace")
    want = str(torch.zeros(1, device=cuda_device).device)  # "cuda" -> "cuda:0"
    assert want in run.headers[0]["devices"]
    ops = run.of_type("pass")
    assert [r["func"] for r in ops if r["kind"] == "op"] == ["linear", "relu", "sum"]
    assert all(r["device"] == want for r in ops), [r["device"] for r in ops]
    assert_data_follows_each_saved_record(run)
    inp = ops[0]
    linear = ops[1]
    assert np.array_equal(run.array(inp["id"]), random_inputs([[2, 4]], "float32", 0)[0][0].numpy())
    assert linear["shape"] == [2, 3] and run.array(linear["id"]).dtype == np.float32


# -- the writer thread ------------------------------------------------------------------------------

def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_bytes_of_a_tensor_changed_in_place_after_sending_arrive_as_they_were_sent():
    import threading

    from agent_testlib import parse_frames
    from torchlens_agent.wire import Wire

    read_fd, write_fd = os.pipe()
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("bytes", _read_all(read_fd)))
    reader.start()
    wire = Wire(os.open(os.devnull, os.O_RDONLY), write_fd)
    big = np.arange(CHUNK_BYTES // 4 + 1000, dtype=np.float32)  # two data frames, the first a full chunk
    sent = big.copy()
    wire.send({"type": "pass", "id": 1, "stored_nbytes": big.nbytes})
    wire.send_data(1, big.view(np.uint8).data)
    big[:] = -1  # the model goes on and writes into the tensor
    wire.send({"type": "done"}, flush=True)
    os.close(write_fd)
    reader.join()
    frames = parse_frames(got["bytes"])
    assert [h["type"] for h, _ in frames] == ["pass", "data", "data", "done"]
    payload = b"".join(p for h, p in frames if h["type"] == "data")
    assert np.array_equal(np.frombuffer(payload, dtype=np.float32), sent)


def test_a_closed_pipe_surfaces_as_wire_closed_on_a_later_send():
    from torchlens_agent.wire import Wire, WireClosed

    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    wire = Wire(os.open(os.devnull, os.O_RDONLY), write_fd)
    with pytest.raises(WireClosed):
        wire.send({"type": "pass", "id": 1}, flush=True)
        wire.send({"type": "pass", "id": 2}, flush=True)


# -- direct writes ----------------------------------------------------------------------------------

MIXED_SIZES_MODEL = '''
import torch
from torch import nn


class Mixed(nn.Module):
    def forward(self, x):
        small = x[:10] * 3
        big = x * 2
        big.relu_()  # in place, after `mul` was recorded: its saved bytes must be the values before
        return big + small.sum()


def build_model():
    return Mixed()
'''


@pytest.mark.parametrize("direct_io", ["auto", "on"])
def test_direct_writes_put_every_payload_large_or_small_into_the_file_at_its_offset_with_its_crc(
        tmp_path, monkeypatch, direct_io):
    """`on`: the large payloads' aligned middles go with O_DIRECT (directio.py) from the first byte."""
    import zlib

    from torchlens_agent.wire import head_room

    path = tmp_path / "mixed.py"
    path.write_text(MIXED_SIZES_MODEL)
    target = tmp_path / "activations.npz"
    target.write_bytes(b"")  # the CLI creates the file; the agent only writes into it
    monkeypatch.setenv("TORCHLENS_AGENT_DIRECT_IO", direct_io)
    n = CHUNK_BYTES // 4 + 1000  # a payload of two chunks
    start = 100
    run = start_agent(extract_request(path, input={"kind": "shape", "shapes": [[n]], "dtype": "float32"}, seed=3,
                                      direct={"path": str(target), "at": start})).wait()
    assert run.rc == 0, run.stderr.decode(errors="replace")
    saved = [r for r in run.of_type("pass") if r["stored_dtype"] is not None]
    done = run.of_type("done")[0]
    crcs = dict((pid, crc) for pid, crc in done["direct_crcs"])
    data = target.read_bytes()
    x = random_inputs([[n]], "float32", 3)[0][0].numpy()
    want = {"input": x, "__getitem__": x[:10], "__mul__": None, "relu_": np.maximum(x * 2, 0)}
    end = start
    for rec in saved:
        assert rec["at"] % 64 == 0 and rec["at"] >= end + head_room(len(rec["shape"])), (rec, end)
        end = rec["at"] + rec["stored_nbytes"]
        frames = [h for h in run.of_type("data") if h["id"] == rec["id"]]
        if rec["stored_nbytes"]:
            assert rec.get("direct") is True and not frames
            got = data[rec["at"]:end]
            assert crcs.pop(rec["id"]) == zlib.crc32(got)
        else:  # nothing to write: no CRC, no frames
            assert "direct" not in rec and not frames
            got = b""
        arr = np.frombuffer(got, dtype=rec["stored_dtype"]).reshape(rec["shape"])
        if rec["func"] == "__mul__" and rec["shape"] == [n]:
            assert np.array_equal(arr, x * 2), "the bytes of a pass changed in place later must be as recorded"
        elif want.get(rec["func"]) is not None:
            assert np.array_equal(arr, want[rec["func"]]), rec["func"]
    assert not crcs, f"CRCs for passes not written directly: {crcs}"
    sizes = sorted(r["stored_nbytes"] for r in saved)
    assert sizes[0] <= 64 and sizes[-1] > CHUNK_BYTES, "the model must make tiny and chunked payloads"



def test_a_failed_direct_write_is_raised_once_as_a_write_error_and_the_pipe_still_carries_the_error_frame(tmp_path):
    import threading

    from agent_testlib import parse_frames
    from torchlens_agent.wire import DirectWriteError, Wire

    target = tmp_path / "activations.npz"
    target.write_bytes(b"")
    read_fd, write_fd = os.pipe()
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("bytes", _read_all(read_fd)))
    reader.start()
    wire = Wire(os.open(os.devnull, os.O_RDONLY), write_fd)
    wire.open_direct(str(target), 0)
    direct = wire._writer.direct
    assert direct is not None
    os.close(direct.fd)
    direct.fd = os.open(str(target), os.O_RDONLY)  # writes to it fail, as on a full disk
    big = np.ones(1 << 18, dtype=np.float32)
    record = {"type": "pass", "id": 1, "stored_nbytes": big.nbytes}
    wire.place(record, big.nbytes, 1)
    wire.send(record)
    wire.send_data(1, big.view(np.uint8).data)
    with pytest.raises(DirectWriteError) as raised:
        wire.flush(wait=True)
    assert raised.value.phase == "write" and "writing the run's arrays failed" in str(raised.value)
    wire.send({"type": "error", "phase": "write"}, flush=True)  # the pipe is not poisoned
    wire.close_direct()
    os.close(write_fd)
    reader.join()
    assert [h["type"] for h, _ in parse_frames(got["bytes"])] == ["pass", "error"]


def test_adjacent_direct_pieces_go_out_in_few_writes_that_never_touch_what_the_cli_writes_during_the_run(
        tmp_path, monkeypatch):
    """Small direct payloads one after another are written together, their head room between them
    included (the CLI fills it at close). Never covered: the room before the first, an empty pass's
    headers (the CLI writes them during the run), the room after it, or after an owned piece."""
    import zlib

    from torchlens_agent import directio
    from torchlens_agent.wire import Wire

    writes = []
    real_pwrite = directio.pwrite_all
    monkeypatch.setattr(directio, "pwrite_all", lambda fd, view, offset: (
        writes.append((offset, len(view))), real_pwrite(fd, view, offset)))
    target = tmp_path / "activations.npz"
    size = 4 << 20
    target.write_bytes(b"\xab" * size)  # what the agent must not write stays 0xab
    wire = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    wire.open_direct(str(target), 64)
    rng = np.random.default_rng(1)
    # (kind, bytes): "copy" is copied into a pool buffer, "owned" queued as it is, "empty" has no bytes
    plan = [("copy", 800)] * 300 + [("empty", 0)] + [("copy", 16)] * 5 + [("owned", 200_000)] + [("copy", 512)] * 40
    placed = []
    for pid, (kind, n) in enumerate(plan, start=1):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        record = {"type": "pass", "id": pid}
        wire.place(record, n, 1)
        if n:
            wire.send_data(pid, data.data, owned=kind == "owned")
        placed.append((kind, record["at"], data))
    crcs = {pid: crc for pid, crc in wire.finish_direct() or []}
    blob = target.read_bytes()
    assert len(writes) < 30, f"{len(writes)} writes for {len(plan)} pieces: adjacent pieces were not joined"
    mine = [False] * len(blob)  # bytes the agent may have written
    end_before = 64
    for pid, (kind, at, data) in enumerate(placed, start=1):
        if data.nbytes:
            assert blob[at:at + data.nbytes] == data.tobytes(), (pid, kind)
            assert crcs.pop(pid) == zlib.crc32(data.tobytes())
            previous = placed[pid - 2] if pid > 1 else None
            if previous is not None and previous[0] == "copy" and kind == "copy":
                for i in range(end_before, at):  # the pass's own head room, written over at close
                    mine[i] = True
            for i in range(at, at + data.nbytes):
                mine[i] = True
        end_before = at + data.nbytes
    assert not crcs
    touched = [i for i in range(end_before) if not mine[i] and blob[i] != 0xAB]
    assert not touched, f"bytes outside the payloads and their joinable head room were written: {touched[:5]}..."
    assert blob[placed[299][1] + 800:placed[301][1]] == b"\xab" * (placed[301][1] - placed[299][1] - 800), \
        "the empty pass's headers and the room of the pass after it belong to the CLI during the run"


def test_pool_buffers_prepared_ahead_carry_a_long_stream_in_order_and_stay_bounded(tmp_path):
    """The writer thread makes the copy buffers before the copier needs them (Wire.prepare_direct,
    then one ahead as buffers are taken); a stream far larger than the pool still arrives whole
    and in order, through no more than POOL_BUFFERS buffers."""
    from torchlens_agent.wire import _Writer

    target = tmp_path / "stream.bin"
    fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    writer = _Writer(fd)
    try:
        writer.prepare()
        writer.drain()
        assert writer.pool_made == 1 and writer.free.qsize() == 1  # made by the thread, ready
        rng = np.random.default_rng(3)
        pieces = [rng.integers(0, 256, size=int(n), dtype=np.uint8) for n in rng.integers(1, CHUNK_BYTES, size=24)]
        for p in pieces:
            source = p.copy()
            writer.put_copy(source.data)
            source[:] = 0  # the tensor changing after it was recorded: the copy went out
        writer.drain()
        assert writer.pool_made <= _Writer.POOL_BUFFERS
    finally:
        writer.items.put(None)
        writer.thread.join()
        os.close(fd)
    assert target.read_bytes() == b"".join(p.tobytes() for p in pieces)


@pytest.mark.parametrize("grow", [False, True], ids=["small payloads", "a payload of several pieces"])
def test_a_copier_waits_for_a_written_buffer_unless_its_payload_is_several_pieces_then_the_pool_grows(grow):
    """With every ready buffer still waiting to be written, the copier of small payloads waits
    for one (fresh pages cost more than the wait) and the pool stays at READY_BUFFERS; the pieces
    of a larger payload (the forward pass stalls until all of it is copied) make new ones, up to
    POOL_BUFFERS."""
    import threading

    from torchlens_agent.wire import _Writer

    read_end, write_end = os.pipe()  # nobody reads it yet: the writer thread blocks on its first write
    writer = _Writer(write_end)
    pieces = _Writer.POOL_BUFFERS + 1
    chunk = np.full(CHUNK_BYTES, 7, dtype=np.uint8)

    def copy_all():
        for _ in range(pieces):
            writer.put_copy(chunk.data, grow=grow)

    copier = threading.Thread(target=copy_all, daemon=True)
    copier.start()
    copier.join(timeout=1.0)
    try:
        assert copier.is_alive(), "the copier must wait once every buffer holds a piece not yet written"
        assert writer.pool_made == (_Writer.POOL_BUFFERS if grow else _Writer.READY_BUFFERS)
    finally:
        received = bytearray()
        def read_all():
            for block in iter(lambda: os.read(read_end, 1 << 20), b""):
                received.extend(block)

        reader = threading.Thread(target=read_all)
        reader.start()
        copier.join()
        writer.drain()
        writer.items.put(None)
        writer.thread.join()
        os.close(write_end)
        reader.join()
        os.close(read_end)
    assert len(received) == pieces * CHUNK_BYTES and set(received) == {7}


def _resident_pages(address: int, pages: int) -> int:
    """How many of the pages from `address` (page-aligned) are in memory (Linux mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(pages * mmap.PAGESIZE), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(v & 1 for v in vec)


@pytest.mark.skipif(platform.system() != "Linux", reason="mincore, as Linux has it")
def test_a_direct_capture_finds_every_pool_buffer_made_and_faulted_in_before_its_forward_pass():
    """Wire.prepare_direct has the writer thread make the whole pool while the model loads: the
    forward pass's copies then never touch fresh memory (page faults cost the copy 9x on a VM)."""
    from torchlens_agent.wire import _Writer

    wire = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    try:
        wire.prepare_direct()
        wire.flush(wait=True)
        writer = wire._writer
        assert writer.pool_made == writer.free.qsize() == _Writer.READY_BUFFERS
        for buffer in list(writer.free.queue):
            pages = -(-len(buffer.array) // mmap.PAGESIZE)
            assert _resident_pages(buffer.address, pages) == pages, "a pool buffer was not faulted in ahead"
        assert _Writer.READY_BUFFERS * CHUNK_BYTES <= 16 << 20, "the pool made ahead stays a few small buffers"
    finally:
        wire._writer.items.put(None)
        wire._writer.thread.join()


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler") or not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies")
def test_the_writer_thread_runs_idle_only_while_torch_threads_fill_every_core(monkeypatch):
    from torchlens_agent.wire import Wire

    cores = len(os.sched_getaffinity(0))

    def policy(w) -> int:
        tid = w._writer.thread.native_id
        assert tid is not None
        return os.sched_getscheduler(tid)

    monkeypatch.delenv("TORCHLENS_AGENT_WRITER", raising=False)
    spare = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    if cores > 1:
        assert spare.yield_cores(cores - 1) is False, "a core is free for the writer: it keeps its policy"
        assert policy(spare) == os.SCHED_OTHER
    busy = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    assert busy.yield_cores(cores) is True
    assert policy(busy) == os.SCHED_IDLE
    forced = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    monkeypatch.setenv("TORCHLENS_AGENT_WRITER", "normal")
    assert forced.yield_cores(cores + 8) is False
    assert policy(forced) == os.SCHED_OTHER


def test_many_small_direct_payloads_in_batches_land_at_their_offsets_with_their_crcs(tmp_path):
    """More pieces than one batch holds, and more bytes than the pool buffers: every piece must be
    written (none left staged when the buffers run out or at the end) with its pass's CRC."""
    import zlib

    from torchlens_agent import wire as wire_mod
    from torchlens_agent.wire import Wire

    target = tmp_path / "direct.bin"
    target.write_bytes(b"")
    w = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
    w.open_direct(str(target), 0)
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 3000, 900)] + [CHUNK_BYTES // 2 + 7] * 7  # 7 half-buffers: reuse
    want = {}
    for pid, n in enumerate(sizes, start=1):
        payload = rng.integers(0, 256, n, dtype=np.uint8)
        rec = {"id": pid}
        w.place(rec, n, 1)
        assert rec.get("direct") is True
        want[pid] = (rec["at"], payload.tobytes())
        w.send_data(pid, memoryview(payload.data), owned=False)
        payload[:] = 0  # the tensor changes after it is recorded: what was sent is the copy
    assert len(sizes) > wire_mod._BATCH_PIECES
    done = w.finish_direct()
    assert done is not None
    crcs = {pid: crc for pid, crc in done}
    data = target.read_bytes()
    for pid, (at, payload) in want.items():
        assert data[at:at + len(payload)] == payload, pid
        assert crcs[pid] == zlib.crc32(payload), pid


@pytest.mark.skipif(platform.system() != "Linux", reason="SO_SNDBUF's doubling and wmem_max are Linux's")
def test_a_socket_to_the_cli_gets_a_send_buffer_as_large_as_the_system_allows():
    """Node hands the agent a Unix socket, not a pipe: with its default buffer (some 200 KB) the
    writer waits on the CLI whenever the records of a small-op model get ahead of its decoding."""
    import socket

    from torchlens_agent.wire import _SEND_BUFFER, _grow_send_buffer

    ours, theirs = socket.socketpair()
    try:
        before = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        _grow_send_buffer(ours.fileno())
        after = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        with open("/proc/sys/net/core/wmem_max") as f:
            cap = int(f.read())
        assert after == max(before, 2 * min(_SEND_BUFFER, cap)), (before, after, cap)
        ours.send(b"x")  # the descriptor is still open and usable after the call
        assert theirs.recv(1) == b"x"
    finally:
        ours.close()
        theirs.close()
