"""What the stimuli are, in which order, and how one is loaded and preprocessed.

`open_stimuli(spec, module)` reads `spec["path"]`:

- None: the model file's `stimuli()`, which yields inputs or (id, input) pairs (kind "hook");
- a directory: its images, recursively, sorted by relative posix path, hidden files and folders
  skipped (kind "folder");
- a .txt file: one image path per line, relative to the list's folder, blank and # lines ignored
  (kind "list");
- a .npy file (memory-mapped) or a .pt file (a tensor, or a list/tuple of tensors): row i is
  stimulus i, already preprocessed (kind "array").

Images are decoded by the model file's `load_stimulus(path)` when it has one, else by Pillow; then
preprocessed by its `transform(image)` when it has one, else by the preset (images.py).

The fingerprint changes when the set does (ids, sizes and modification times of files; an array
file's size, time, shape and dtype; a hook's ids and input shapes): a rerun under an existing
dataset is refused when it changed.
"""

import hashlib
import os
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..errors import UserError
from .images import IMAGE_EXTENSIONS, decode, preprocess

KINDS_HINT = ("give a folder of images (.png, .jpg, ...), a .txt list of image paths, a .npy/.pt array of "
              "inputs, or define stimuli() in the model file")


class BadStimulus(Exception):
    """A stimulus that cannot be read: its row, id, path (None for arrays) and why."""

    def __init__(self, index: int, sid: str, path: Optional[str], message: str):
        super().__init__(message)
        self.index, self.sid, self.path, self.message = index, sid, path, message

    def __reduce__(self):  # it travels back from a loader worker
        return (BadStimulus, (self.index, self.sid, self.path, self.message))


def as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    raise UserError("stimuli", f"{what} gave a {type(value).__name__}, not a tensor or numpy array",
                    "make it return a torch.Tensor (or a numpy array) for one stimulus, without a batch dimension")


class StimulusSet:
    def __init__(self, kind: str, ids: List[str], fingerprint: str, load: Callable[[int], torch.Tensor],
                 describe: str, sequential: bool = False,
                 stream: Optional[Callable[[int], Iterator[torch.Tensor]]] = None):
        self.kind = kind
        self.ids = ids
        self.fingerprint = fingerprint
        self.sequential = sequential
        self._load = load
        self._describe = describe
        self._stream = stream
        self._shape: Optional[Tuple[int, ...]] = None

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> torch.Tensor:
        return self._load(i)

    def stream(self, start: int) -> Iterator[torch.Tensor]:
        """Stimuli start, start+1, ... in order (a generator's: without rerunning it for each)."""
        if self._stream is not None:
            return self._stream(start)
        return (self.load(i) for i in range(start, len(self)))

    def describe(self) -> str:
        return self._describe

    def item_shape(self) -> Tuple[int, ...]:
        """The shape of one preprocessed stimulus: the first one that can be read."""
        if self._shape is None:
            for i in range(len(self)):
                try:
                    self._shape = tuple(self.load(i).shape)
                    break
                except BadStimulus:
                    continue
            else:
                raise UserError("stimuli", "no stimulus of the set can be read", "fix the stimuli")
        return self._shape


def _fingerprint(parts: List[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def _image_set(kind: str, ids: List[str], paths: List[str], module, spec, where: str) -> StimulusSet:
    if not ids:
        raise UserError("stimuli", f"no stimuli found in {where}", KINDS_HINT)
    parts = []
    for sid, p in zip(ids, paths):
        try:
            st = os.stat(p)
            parts.append(f"{sid}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{sid}\tmissing")
    loader = getattr(module, "load_stimulus", None)
    transform = getattr(module, "transform", None)
    preset, size = spec.get("preset"), spec.get("size")

    def load(i: int) -> torch.Tensor:
        path = paths[i]
        if loader is not None:
            return as_tensor(loader(path), "load_stimulus()")
        try:
            img = decode(path)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            raise BadStimulus(i, ids[i], path, f"{type(exc).__name__}: {exc}") from exc
        if transform is not None:
            return as_tensor(transform(img), "transform()")
        return preprocess(img, preset, size)

    exts = sorted({os.path.splitext(p)[1].lower().lstrip(".") for p in paths})
    how = "load_stimulus()" if loader else "transform()" if transform else f"preset {preset}" if preset else "no preset"
    describe = f"{len(ids)} images in {where} ({', '.join(exts)}; {how})"
    return StimulusSet(kind, ids, _fingerprint(parts), load, describe)


def _folder(path: str, module, spec) -> StimulusSet:
    found: List[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/"))
    found.sort()
    return _image_set("folder", found, [os.path.join(path, f) for f in found], module, spec, path)


def _list(path: str, module, spec) -> StimulusSet:
    folder = os.path.dirname(os.path.abspath(path))
    ids, paths = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            full = line if os.path.isabs(line) else os.path.join(folder, line)
            if not os.path.isfile(full):
                raise UserError("stimuli", f"{path}, line {n}: {line} is not a file",
                                "fix the line (paths are relative to the list's folder) or remove it")
            ids.append(line)
            paths.append(full)
    return _image_set("list", ids, paths, module, spec, path)


def _array(path: str) -> StimulusSet:
    st = os.stat(path)
    if path.lower().endswith(".npy"):
        arr: Any = np.load(path, mmap_mode="r")
        shape, dtype = tuple(arr.shape), str(arr.dtype)
        load = lambda i: torch.from_numpy(np.array(arr[i]))  # noqa: E731 - each row its own memory
    else:
        data = torch.load(path, map_location="cpu")
        if isinstance(data, (list, tuple)):
            data = [as_tensor(t, path) for t in data]
            if data and any(t.shape != data[0].shape for t in data):
                raise UserError("stimuli", f"{path} holds tensors of different shapes",
                                "save one tensor of N stimuli, or a list of same-shape tensors")
            shape = (len(data),) + (tuple(data[0].shape) if data else ())
            dtype = str(data[0].dtype) if data else "?"
            load = lambda i: data[i]  # noqa: E731
        elif isinstance(data, torch.Tensor):
            shape, dtype = tuple(data.shape), str(data.dtype)
            load = lambda i: data[i].clone()  # noqa: E731
        else:
            raise UserError("stimuli", f"{path} holds a {type(data).__name__}, not a tensor of stimuli",
                            "save one tensor of N stimuli (torch.save(x, path)) or a list of tensors")
    if len(shape) == 0 or shape[0] == 0:
        raise UserError("stimuli", f"no stimuli found in {path}: its array has shape {shape}",
                        "the first dimension of the array counts the stimuli; give at least one")
    fp = _fingerprint([f"{st.st_size}\t{st.st_mtime_ns}\t{shape}\t{dtype}"])
    return StimulusSet("array", [str(i) for i in range(shape[0])], fp, load,
                       f"{shape[0]} stimuli of shape {shape[1:]} ({dtype}) in {path}")


def _hook(module) -> StimulusSet:
    def items(start: int = 0) -> Iterator[Tuple[str, torch.Tensor]]:
        for i, item in enumerate(module.stimuli()):
            if i < start:
                continue
            if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], (torch.Tensor, np.ndarray)):
                yield str(item[0]), as_tensor(item[1], "stimuli()")
            else:
                yield str(i), as_tensor(item, "stimuli()")

    ids, parts = [], []
    for sid, t in items():
        ids.append(sid)
        parts.append(f"{sid}\t{tuple(t.shape)}\t{t.dtype}")
    if not ids:
        raise UserError("stimuli", "the model file's stimuli() yielded nothing", "make it yield at least one input")

    def load(i: int) -> torch.Tensor:
        return next(stream(i))

    def stream(start: int) -> Iterator[torch.Tensor]:
        return (t for _, t in items(start))

    return StimulusSet("hook", ids, _fingerprint(parts), load, f"{len(ids)} stimuli from stimuli() in the model file",
                       sequential=True, stream=stream)


def open_stimuli(spec: dict, module) -> StimulusSet:
    path = spec.get("path")
    if path is None:
        if not callable(getattr(module, "stimuli", None)):
            raise UserError("stimuli", "no stimuli given, and the model file defines no stimuli()", KINDS_HINT)
        return _hook(module)
    if not os.path.exists(path):
        raise UserError("stimuli", f"stimuli not found: {path}", KINDS_HINT)
    if os.path.isdir(path):
        return _folder(path, module, spec)
    low = path.lower()
    if low.endswith(".txt"):
        return _list(path, module, spec)
    if low.endswith((".npy", ".pt", ".pth")):
        return _array(path)
    if low.endswith(IMAGE_EXTENSIONS):
        raise UserError("stimuli", f"{path} is one image, not a stimulus set",
                        "give the folder that holds the images, or a .txt list of their paths")
    raise UserError("stimuli", f"cannot tell what stimuli {path} holds", KINDS_HINT)
