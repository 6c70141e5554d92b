"""A selected pass's tensor → the rows of its .npy, and writing rows in place.

The CLI makes each layer's .npy (header and full size) before any shard starts; the agent only
writes rows into it, with `os.pwrite` at the row's offset, so that no mapping of the file grows the
process's memory however large the dataset is. `sync` makes the rows durable before the batch is
reported done (the CLI records completion only after that)."""

import os
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

def to_rows(t: Tensor, layer: Dict[str, Any]) -> np.ndarray:
    """Rows as the layer's file holds them: `pool` averages every dimension after the channel one
    (a conv map (B, C, H, W) becomes (B, C)), `flatten` makes each row one vector, and the values
    are cast to the file's dtype (`descr`, which the CLI chose: --dtype, else the pass's own)."""
    x = t.detach()
    if layer.get("pool") == "mean" and x.dim() > 2:
        if not (x.is_floating_point() or x.is_complex()):
            x = x.double()
        x = x.mean(dim=tuple(range(2, x.dim())))
    if layer.get("flatten"):
        x = x.reshape(x.shape[0], -1)
    x = x.cpu()
    if x.dtype == torch.bfloat16:  # numpy has no bfloat16
        x = x.float()
    return np.ascontiguousarray(x.numpy().astype(np.dtype(layer["descr"]), copy=False))


class RowFile:
    """One layer's .npy, opened for writing rows at their offsets."""

    def __init__(self, path: str, row_shape: List[int], descr: str):
        self.path = path
        self.row_shape = tuple(row_shape)
        mapped = np.load(path, mmap_mode="r")  # numpy's own header reader; mapping reads nothing
        shape, dtype, fortran = mapped.shape, mapped.dtype, bool(mapped.flags.f_contiguous and mapped.ndim > 1)
        self.offset = int(mapped.offset)
        del mapped
        if fortran or tuple(shape[1:]) != self.row_shape or dtype.str != descr:
            raise UserError("dataset", f"{path} holds {dtype.str} rows of {tuple(shape[1:])}, not {descr} rows of "
                            f"{self.row_shape}", "the output was changed by something else; make it again in a new -o")
        self.rows = shape[0]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
        self.descr = descr
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        if rows.dtype.str != self.descr or tuple(rows.shape[1:]) != self.row_shape:
            raise UserError("dataset", f"a batch gave {rows.dtype.str} rows of {tuple(rows.shape[1:])} for "
                            f"{os.path.basename(self.path)}, which holds {self.descr} rows of {self.row_shape}",
                            "the model's output shape changed with the input; give every stimulus one shape")
        if start < 0 or start + rows.shape[0] > self.rows:
            raise UserError("dataset", f"rows {start}..{start + rows.shape[0]} are outside {self.path} "
                            f"({self.rows} rows)", "this is a bug in torchlens; please report it")
        view = memoryview(rows.reshape(-1).view(np.uint8).data)
        offset = self.offset + start * self.row_bytes
        done = 0
        while done < len(view):  # pwrite may write less than asked
            done += os.pwrite(self.fd, view[done:], offset + done)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def open_rows(layers: List[Dict[str, Any]], folder: str) -> List[Tuple[Dict[str, Any], RowFile]]:
    return [(layer, RowFile(os.path.join(folder, layer["file"]), layer["row_shape"], layer["descr"]))
            for layer in layers]
