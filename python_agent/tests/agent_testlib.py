"""Shared helpers for the agent's tests: a frame collector for in-process capture, a captured-run view,
and a real agent process driven over its pipes. Real torch throughout; nothing here imitates torch.
"""

import os
import struct
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

import msgpack
import numpy as np
import torch
from torch import nn

from torchlens_agent.capture.install import Wrappers
from torchlens_agent.capture.run import run_captured
from torchlens_agent.capture.session import CaptureSession

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # python_agent/
_LEN = struct.Struct("<I")


# -- in-process capture ----------------------------------------------------------------------------

class FrameCollector:
    """Stands in for `wire.Wire` on the sending side: keeps every frame a CaptureSession sends."""

    def __init__(self) -> None:
        self.frames: List[Dict[str, Any]] = []  # headers in send order; data frames included
        self.payloads: Dict[int, bytearray] = {}  # pass id -> its bytes, reassembled

    def send(self, header: Dict[str, Any], *, flush: bool = False) -> None:
        self.frames.append(dict(header))

    def place(self, record: Dict[str, Any], nbytes: int, ndim: int) -> None:
        pass  # no direct file: every payload travels in frames

    def send_data(self, pass_id: int, payload: memoryview, owned: bool = False) -> None:
        data = bytes(payload)
        self.frames.append({"type": "data", "id": pass_id, "nbytes": len(data)})
        self.payloads.setdefault(pass_id, bytearray()).extend(data)

    def flush(self, wait: bool = False) -> None:
        pass


class Fn(nn.Module):
    """A module whose forward is a plain function, for op-level tests."""

    def __init__(self, fn, **children: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            self.add_module(name, child)

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def output_ids(node: Dict[str, Any]) -> List[int]:
    """The output pass ids of a `done` frame's output structure, in the order of the returned value."""
    if node["kind"] == "tensor":
        return [node["id"]]
    if node["kind"] in ("tuple", "list"):
        return [i for item in node["items"] for i in output_ids(item)]
    if node["kind"] == "dict":
        return [i for item in node["items"].values() for i in output_ids(item)]
    return []


class Captured:
    """What one captured forward pass sent, with lookups by pass id and function name."""

    def __init__(self, wire: FrameCollector, session: CaptureSession, outputs: Dict[str, Any], result: Any):
        self.wire = wire
        self.session = session
        self.outputs = outputs  # the `done` frame's output structure
        self.result = result  # what the model returned
        self.records = [f for f in wire.frames if f["type"] == "pass"]
        self.modules = [f for f in wire.frames if f["type"] == "module"]
        self.by_id = {r["id"]: r for r in self.records}

    def of_kind(self, kind: str) -> List[Dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]

    def named(self, func: str) -> List[Dict[str, Any]]:
        return [r for r in self.records if r["func"] == func and r["kind"] in ("op", "internal")]

    def one(self, func: str) -> Dict[str, Any]:
        found = self.named(func)
        assert len(found) == 1, f"expected one {func!r} record, got {len(found)}: {self.funcs()}"
        return found[0]

    def funcs(self) -> List[str]:
        return [r["func"] for r in self.records if r["kind"] in ("op", "internal")]

    def parents(self, record: Dict[str, Any]) -> List[int]:
        return [pid for pid, _ in record["parents"]]

    def output_ids(self) -> List[int]:
        """Output pass ids in the order of the returned structure."""
        return output_ids(self.outputs)

    def producer(self, output_id: int) -> Dict[str, Any]:
        """The op record an output pass comes from."""
        (parent,) = self.parents(self.by_id[output_id])
        return self.by_id[parent]

    def array(self, pid: int) -> np.ndarray:
        """A saved pass's bytes, read back as the wire describes them."""
        rec = self.by_id[pid]
        data = bytes(self.wire.payloads.get(pid, b""))
        assert len(data) == rec["stored_nbytes"], f"pass {pid}: {len(data)} bytes arrived, record says {rec['stored_nbytes']}"
        return np.frombuffer(data, dtype=np.dtype(rec["stored_dtype"])).reshape(rec["shape"])


def capture(model: nn.Module, *args: Any, save: Any = "all", max_repr: int = 64, **kwargs: Any) -> Captured:
    """Run model(*args, **kwargs) under capture the way extract.py does, always restoring torch.

    `save` is the extract request's `save` field: "all", "none" or a selection.
    """
    wrappers = Wrappers()
    wire = FrameCollector()
    wrappers.install()
    try:
        session = CaptureSession(wire, model, save=save, max_repr=max_repr)
        out, _ = run_captured(wrappers, session, model, args, kwargs)
        outputs = session.add_outputs(out)
    finally:
        wrappers.restore()
    return Captured(wire, session, outputs, out)


def expected_bytes(t: torch.Tensor) -> np.ndarray:
    """The C-order array the agent should store for t (bfloat16 as float32)."""
    d = t.detach().cpu()
    if d.dtype == torch.bfloat16:
        d = d.float()
    if hasattr(d, "resolve_conj"):
        d = d.resolve_conj().resolve_neg()
    return np.ascontiguousarray(d.numpy())


# -- a real agent process --------------------------------------------------------------------------

def pack_frame(header: Dict[str, Any]) -> bytes:
    body: bytes = msgpack.Packer(use_bin_type=True).pack(header)
    return _LEN.pack(len(body)) + body


def parse_frames(stream: bytes) -> List[Tuple[Dict[str, Any], bytes]]:
    """Split the agent's stdout into (header, payload) pairs; only `data` frames carry a payload."""
    frames = []
    pos = 0
    while pos < len(stream):
        assert pos + 4 <= len(stream), f"truncated length prefix at byte {pos}"
        (length,) = _LEN.unpack_from(stream, pos)
        pos += 4
        assert pos + length <= len(stream), f"truncated header at byte {pos}"
        header = msgpack.unpackb(stream[pos:pos + length], raw=False)
        pos += length
        assert isinstance(header, dict) and "type" in header, f"not a frame header: {header!r}"
        payload = b""
        if header["type"] == "data":
            n = header["nbytes"]
            assert pos + n <= len(stream), f"data frame for pass {header['id']} is cut short"
            payload = stream[pos:pos + n]
            pos += n
        frames.append((header, payload))
    return frames


class AgentRun:
    def __init__(self, proc: subprocess.Popen, stdin: bytes):
        self.proc = proc
        self._stdin = stdin
        self.frames: List[Tuple[Dict[str, Any], bytes]] = []
        self.stdout = b""
        self.stderr = b""
        self.rc: Optional[int] = None

    def wait(self, timeout: float = 120) -> "AgentRun":
        if self.rc is None:
            try:
                self.stdout, self.stderr = self.proc.communicate(self._stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise AssertionError(f"the agent did not finish within {timeout} s")
            self.rc = self.proc.returncode
            self.frames = parse_frames(self.stdout)
        return self

    @property
    def headers(self) -> List[Dict[str, Any]]:
        return [h for h, _ in self.frames]

    def of_type(self, kind: str) -> List[Dict[str, Any]]:
        return [h for h in self.headers if h["type"] == kind]

    def payload(self, pid: int) -> bytes:
        return b"".join(p for h, p in self.frames if h["type"] == "data" and h["id"] == pid)

    def array(self, pid: int) -> np.ndarray:
        (rec,) = [h for h in self.of_type("pass") if h["id"] == pid]
        return np.frombuffer(self.payload(pid), dtype=np.dtype(rec["stored_dtype"])).reshape(rec["shape"])


def start_agent(*requests: Dict[str, Any], extra_stdin: bytes = b"", standby: bool = False,
                wake: bytes = b"", extra_path: Optional[str] = None) -> AgentRun:
    """Spawn `python -m torchlens_agent` as the CLI does and queue the requests on its stdin.
    `standby` starts it as the CLI starts its later Python candidates; `wake` goes first on stdin;
    `extra_path` goes on PYTHONPATH right after the agent (before the installed packages)."""
    env = dict(os.environ)
    path = [AGENT_ROOT, extra_path, env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TORCHLENS_AGENT_STANDBY", None)
    if standby:
        env["TORCHLENS_AGENT_STANDBY"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "torchlens_agent"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return AgentRun(proc, wake + b"".join(pack_frame(r) for r in requests) + extra_stdin)


def extract_request(model_file: Any, **fields: Any) -> Dict[str, Any]:
    request = {"type": "extract", "model_file": str(model_file), "model_name": None,
               "input": {"kind": "example"}, "seed": 0, "device": "cpu", "save": "all", "max_args_repr": 64}
    request.update(fields)
    return request
