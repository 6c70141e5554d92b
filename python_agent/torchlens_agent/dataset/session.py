"""The capture session of one dataset batch: the same capture as extract, but nothing goes on the
wire. It keeps what the graph check needs (each pass's function and parents, in order) and the
tensors of the selected passes, to be written as rows."""

from typing import Any, Dict, List

from torch import Tensor

from ..capture.session import CaptureSession


class _Discard:
    """The wire of a session that sends nothing (module frames are extract's, for its log)."""

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass


class DatasetSession(CaptureSession):
    """Overrides `send_pass` only: the hot path is extract's."""

    def __init__(self, model, ids: List[int]):
        super().__init__(_Discard(), model, save={"ids": list(ids)})
        self.signature: List[List[Any]] = []
        self.kept: Dict[int, Tensor] = {}

    def send_pass(self, t: Tensor, record: Dict[str, Any]) -> None:
        self.signature.append([record["func"], record["parents"]])
        if record["id"] in self.selection.ids:
            self.kept[record["id"]] = t.detach()


def first_difference(reference: List[List[Any]], signature: List[List[Any]]) -> str:
    """'' when the two forwards made the same passes from the same parents, else what differed first."""
    for i in range(max(len(reference), len(signature))):
        if i >= len(reference) or i >= len(signature):
            return f"the probe's forward made {len(reference)} passes, this one {len(signature)}"
        a, b = reference[i], signature[i]
        if a[0] != b[0] or [list(p) for p in a[1]] != [list(p) for p in b[1]]:
            return (f"pass {i + 1} was {a[0]} of passes {[p[0] for p in a[1]]} in the probe's forward, "
                    f"but {b[0]} of passes {[p[0] for p in b[1]]} here")
    return ""
