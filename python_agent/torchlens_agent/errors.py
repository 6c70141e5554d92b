"""Errors: what the user gave us that is wrong (`UserError`), and the `error` frame for any exception."""

import errno
import os
import traceback
from typing import Any, Dict, List, Optional


class UserError(Exception):
    """A problem with what the user gave us; `hint` says how to fix it."""

    def __init__(self, phase: str, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.phase = phase
        self.hint = hint


_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_frames(tb) -> List[Dict[str, Any]]:
    """Frames of the user's code: neither torch's, nor ours, nor the import machinery's."""
    import torch

    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    frames = []
    for fs in traceback.extract_tb(tb):
        path = os.path.abspath(fs.filename)
        if path.startswith(_AGENT_DIR) or path.startswith(torch_dir) or fs.filename.startswith("<frozen"):
            continue
        frames.append({"file": fs.filename, "line": fs.lineno, "func": fs.name, "text": (fs.line or "").strip()})
    return frames


def error_frame(phase: str, exc: BaseException) -> Dict[str, Any]:
    hint = getattr(exc, "hint", None)
    frames = _user_frames(exc.__traceback__)
    if isinstance(exc, SyntaxError):
        frames.append({"file": exc.filename, "line": exc.lineno, "func": "<module>", "text": (exc.text or "").strip()})
        message = f"{exc.msg} ({os.path.basename(exc.filename or '?')}, line {exc.lineno})"
        hint = hint or "fix the syntax error in the model file"
    else:
        message = str(exc)
    if phase == "capture" and isinstance(exc, TypeError) and "forward()" in message:
        hint = hint or ("the input does not match the model's forward() signature: a .pt holding a tensor is one "
                        "argument, a tuple or list is several, and {'args': [...], 'kwargs': {...}} is explicit")
    frame = {"type": "error", "phase": getattr(exc, "phase", phase) if isinstance(exc, UserError) else phase,
             "exc_type": type(exc).__name__, "message": message, "traceback": frames, "hint": hint}
    code = exc.errno if isinstance(exc, OSError) else None
    if code is not None and code in errno.errorcode:
        frame["errno"] = errno.errorcode[code]  # "ENOSPC": the CLI words file-system failures itself
    return frame


