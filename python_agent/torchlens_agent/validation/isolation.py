"""Replays that may crash the process: ops from C++ extensions (`foreign`) run their perturbed
replays in a forked child (`isolated`)."""

import faulthandler
import os
from typing import Any, Callable, Dict

import torch

def foreign(record: Dict[str, Any]) -> bool:
    """An op from a C++ extension rather than torch itself (torch.ops.<namespace> other than aten)."""
    qualname = record.get("qualname") or ""
    return qualname.startswith("torch.ops.") and not qualname.startswith("torch.ops.aten.")


def isolated(attempt: Callable[[], bool]) -> bool:
    """attempt() in a forked child, so that a crash in it cannot take the agent down; a child that
    dies before answering counts as True (the perturbation changed something: it crashed)."""
    if not hasattr(os, "fork"):
        return attempt()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one byte of answer, and never back into the agent
        code = 1
        try:
            os.close(read_end)
            faulthandler.disable()  # a crash here is an answer, not something to report
            torch.set_num_threads(1)
            os.write(write_end, b"1" if attempt() else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        answer = os.read(read_end, 1)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return answer != b"0"
