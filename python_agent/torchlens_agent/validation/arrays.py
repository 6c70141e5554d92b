"""The run's arrays: activations.npz read entry by entry (a reader of our own, see `RunArrays`), and a
saved array turned back into a tensor like the live one.
"""

import io
import struct
import zipfile
from typing import Dict

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

class RunArrays:
    """Arrays of activations.npz (or gradients.npz, `name`) by key, read straight from the stored
    entries (no pickles, no CRC check here: the CLI checks CRCs and reports altered entries
    itself). Recently used arrays are kept up to a byte budget, since a pass is usually read again
    by its children."""

    def __init__(self, path: str, budget: int = 512 << 20, name: str = "activations.npz"):
        self.name = name  # the file's name in messages
        self._of = "" if name == "activations.npz" else f" of {name}"
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise UserError("replay", f"{name} cannot be read: {exc}", "the run is damaged; re-run torchlens extract") from exc
        self._infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in self._zip.infolist()}
        self._fp = open(path, "rb")
        self._cache: Dict[str, np.ndarray] = {}
        self._cached = 0
        self._budget = budget

    def get(self, key: str) -> np.ndarray:
        arr = self._cache.get(key)
        if arr is not None:
            return arr
        info = self._infos.get(key)
        if info is None:
            raise UserError("replay", f"{self.name} has no array {key!r}", "the run is damaged; re-run torchlens extract")
        if info.compress_type != zipfile.ZIP_STORED:
            raise UserError("replay", f"array {key!r}{self._of} is compressed; torchlens runs store arrays uncompressed", None)
        self._fp.seek(info.header_offset)
        local = self._fp.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise UserError("replay", f"array {key!r}{self._of}: damaged local header", "the run is damaged; re-run torchlens extract")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        self._fp.seek(info.header_offset + 30 + name_len + extra_len)
        data = self._fp.read(info.file_size)
        if len(data) != info.file_size:
            raise UserError("replay", f"array {key!r}{self._of} is cut short", "the run is damaged; re-run torchlens extract")
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(buf)
        if dtype.hasobject:
            raise UserError("replay", f"array {key!r}{self._of} holds Python objects; refusing to load it", None)
        arr = np.frombuffer(data, dtype=dtype, offset=buf.tell(), count=int(np.prod(shape)) if shape else 1)
        arr = arr.reshape(shape, order="F" if fortran else "C")
        self._cache[key] = arr
        self._cached += arr.nbytes
        while self._cached > self._budget and len(self._cache) > 1:
            oldest = next(iter(self._cache))
            self._cached -= self._cache.pop(oldest).nbytes
        return arr

    def close(self) -> None:
        self._fp.close()
        self._zip.close()


def tensor_like(saved: np.ndarray, live: Tensor) -> Tensor:
    """A saved array as a tensor like the live one: its dtype and device, quantized as it is."""
    if live.is_quantized:
        return _requantize(saved, live)
    t = torch.from_numpy(np.array(saved, copy=True))
    if t.dtype != live.dtype:
        t = t.to(live.dtype)
    return t.to(live.device)


def _requantize(saved: np.ndarray, live: Tensor) -> Tensor:
    """A quantized tensor from its saved integer representation and the live tensor's scales."""
    ints = torch.from_numpy(np.array(saved, copy=True))
    if live.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return torch._make_per_tensor_quantized_tensor(ints, live.q_scale(), live.q_zero_point())
    return torch._make_per_channel_quantized_tensor(ints, live.q_per_channel_scales(), live.q_per_channel_zero_points(),
                                                    live.q_per_channel_axis())
