"""The agent's request loop: hello, then one extract per process, then exit.

Errors become `error` frames (docs/wire.md) carrying the user's own traceback frames only.
"""

import os
import platform
import sys
from typing import Any, Dict

from . import AGENT_VERSION, PROTOCOL
from .wire import Wire, WireClosed, take_over_stdio

def hello() -> Dict[str, Any]:
    import msgpack
    import numpy
    import torch

    devices = ["cpu"]
    try:
        if torch.cuda.is_available():
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install still lets us run on the CPU
        pass
    return {"type": "hello", "protocol": PROTOCOL, "agent": AGENT_VERSION, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "msgpack": ".".join(map(str, msgpack.version)),
            "platform": platform.platform(), "devices": devices, "pid": os.getpid(), "executable": sys.executable}


def main() -> int:
    wire = take_over_stdio()
    try:
        wire.send(hello(), flush=True)
        while True:
            request = wire.recv()
            if request is None or request.get("type") == "shutdown":
                return 0
            if request.get("type") == "extract":
                from .extract import extract

                return extract(wire, request)
            if request.get("type") == "dataset":
                from .dataset.run import dataset

                return dataset(wire, request)
            if request.get("type") == "validate":
                from .validate import validate

                return validate(wire, request)
            wire.send({"type": "error", "phase": "internal", "exc_type": "ProtocolError",
                       "message": f"unknown request {request.get('type')!r}", "traceback": [], "hint": None}, flush=True)
            return 2
    except WireClosed:
        return 1
    finally:
        try:  # everything queued leaves before the process does
            wire.flush(wait=True)
        except WireClosed:
            pass
