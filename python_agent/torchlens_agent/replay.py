"""Validation by replay: re-run the captured forward pass and check every saved pass against it.

For each op as it happens, `ValidationSession` calls the same function again with the same
non-tensor arguments, feeding it the parents' arrays read from the run's activations.npz (live
values for parents that were not saved), and compares the result with the op's saved array.
Random ops are replayed with the RNG state from just before the original call. Then each parent
is perturbed: the child must change (a missing or wrong edge shows up here), except where a rule
in `EXEMPT` says the op need not depend on that argument's values.

Sources are checked too: inputs, buffers and constants against the live tensors, outputs against
the value the model returned.
"""

import faulthandler
import io
import os
import struct
import time
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .capture import VIEW_WRITE, CaptureSession, dtype_name, shape_of, tensor_bytes
from .errors import UserError
from .walk import get_at, iter_tensors, map_tensors_at

from torch import Tensor  # noqa: E402  (a class, usable in annotations)

# -- tolerances -------------------------------------------------------------------------------------

# (rtol, atol) per dtype of the compared arrays: |replay - saved| <= atol + rtol * |saved|.
# Replaying one op on the same inputs is usually bit-exact on CPU; the slack covers kernels that
# reorder sums (threads, GPUs). Integer and bool arrays must be equal.
TOLERANCE = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-3),
    "bfloat16": (2e-2, 1e-2),
    "complex128": (1e-7, 1e-9),
    "complex64": (1e-4, 1e-5),
    "complex32": (1e-2, 1e-3),
}
_DEFAULT_FLOAT_TOL = (1e-2, 1e-2)  # float8 and other narrow floats

# -- exemptions from the dependence check -------------------------------------------------------------

# Each rule: name -> (description, predicate(func, position) -> bool). `position` is the
# parent's argument position ("0", "k:other", ...). The report names the rule that applied.
_SHAPE_ONLY_FIRST = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
                     "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
                     "empty_strided"}
_SHAPE_ONLY_SECOND = {"type_as", "expand_as", "view_as", "reshape_as", "broadcast_to", "to", "new_tensor"}
_OVERWRITES_SELF = {"fill_", "zero_", "copy_", "normal_", "uniform_", "bernoulli_", "random_",
                    "exponential_", "geometric_", "cauchy_", "log_normal_", "set_", "resize_", "resize_as_"}
# Ops that may legitimately ignore an argument for some values (a where() whose condition never
# picks one side, a clamp whose bound is never reached): exempt only when the perturbation had no
# effect.
_MAY_IGNORE = {"where", "masked_fill", "masked_fill_", "masked_scatter", "masked_scatter_", "maximum",
               "minimum", "fmax", "fmin", "max", "min", "clamp", "clamp_", "clip", "clip_", "index_put",
               "index_put_", "scatter", "scatter_", "scatter_add", "scatter_add_", "__setitem__",
               "index_copy", "index_copy_", "index_fill", "index_fill_", "relu", "relu_", "hardtanh",
               "hardtanh_", "threshold", "threshold_", "relu6", "sign", "floor", "ceil", "round", "trunc",
               "__and__", "__or__", "logical_and", "logical_or", "mul", "__mul__", "__rmul__", "__imul__",
               "argmax", "argmin", "sort", "argsort", "topk", "eq", "ne", "lt", "le", "gt", "ge", "__eq__",
               "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "isnan", "isinf", "isfinite", "any", "all",
               "heaviside", "bucketize", "searchsorted", "nonzero", "unique", "embedding", "dropout", "mode",
               "median", "kthvalue", "cummax", "cummin", "max_pool1d", "max_pool2d", "max_pool3d",
               "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
               "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "embedding_bag",
               # several outputs, each from one of several inputs: output i ignores input j
               # indexing by a tensor: the picked values may all be equal
               "__getitem__", "index_select", "gather", "take", "take_along_dim",
               "meshgrid", "broadcast_tensors", "atleast_1d", "atleast_2d", "atleast_3d", "block_diag",
               # which boxes survive need not move with their values
               "nms", "batched_nms"}

_REMAINDER = {"__mod__", "__imod__", "remainder", "remainder_", "fmod", "fmod_"}

# Ops whose output is uninitialized memory: nothing to compare, only the shape and dtype.
UNINITIALIZED = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"}

EXEMPT: Dict[str, Tuple[str, Callable[[str, str], bool]]] = {
    "shape-only": ("the op reads only the shape, dtype or device of this argument",
                   lambda f, pos: (f in _SHAPE_ONLY_FIRST and pos == "0") or (f in _SHAPE_ONLY_SECOND and pos in ("1", "k:other"))),
    "overwritten": ("the op overwrites this argument without reading its values",
                    lambda f, pos: f in _OVERWRITES_SELF and pos == "0"),
    "may-ignore": ("the op may ignore this argument for some values (selection, clamping, "
                   "thresholds, comparisons, indices): a perturbation with no effect is not an error",
                   lambda f, pos: f in _MAY_IGNORE),
    "zero-parameters": ("a parameter the op uses is all zeros (an initialisation such as ViT's zeroed head), "
                        "so its output need not depend on this argument", lambda f, pos: False),
    "remainder-by-one": ("an integer remainder by 1 or -1 is 0 whatever the dividend (keypoint R-CNN's `pos % w` "
                         "for a heatmap one pixel wide)", lambda f, pos: False),  # applied by the check: needs the divisor
    "uninitialized": ("the op returns uninitialized memory (torch.empty and kin): its values are arbitrary, "
                      "so only shape and dtype are checked", lambda f, pos: f in UNINITIALIZED),
    "quantized": ("the argument is quantized: a perturbation can saturate or round back to the same output",
                  lambda f, pos: False),
    "unperturbable": ("torchlens cannot make a perturbed copy of this argument (a per-channel quantized tensor)",
                      lambda f, pos: False),
    "other-output": ("this output of a multi-output call does not depend on the argument; another output of the "
                     "same call does (unbind, pack_padded_sequence's batch sizes, embedding_bag's offsets)",
                     lambda f, pos: False),  # applied by the check, which sees every output of the call
    "non-finite": ("the pass is NaN or infinite everywhere and stayed so for every perturbation tried (another "
                   "argument is NaN, or the op maps every value tried outside its domain): no value could show "
                   "the dependence", lambda f, pos: False),  # applied by the check, which sees the output
    "empty": ("the output has no elements, or the parent has none: there is no value to change",
              lambda f, pos: False),  # applied where the check finds an empty tensor, not by name
}
_UNCONDITIONAL = ("shape-only", "overwritten")


def exemption(func: str, position: str, changed: Optional[bool]) -> Optional[str]:
    """The rule that exempts this parent from the dependence check, if any."""
    for name in _UNCONDITIONAL:
        if EXEMPT[name][1](func, position):
            return name
    if changed is False and (EXEMPT["may-ignore"][1](func, position)
                             or EXEMPT["may-ignore"][1](_out_of_place(func), position)):
        return "may-ignore"
    return None


def _out_of_place(func: str) -> str:
    """The out-of-place op an in-place one mirrors: `__ior__` → `__or__`, `clamp_` → `clamp`."""
    if func.startswith("__i") and func.endswith("__") and func not in ("__init__", "__index__", "__invert__"):
        return "__" + func[3:]
    if func.endswith("_") and not func.endswith("__"):
        return func[:-1]
    return func


# -- reading the run's arrays -------------------------------------------------------------------------

class RunArrays:
    """Arrays of activations.npz by key, read straight from the stored entries (no pickles, no
    CRC check here: the CLI checks CRCs and reports altered entries itself). Recently used arrays
    are kept up to a byte budget, since a pass is usually read again by its children."""

    def __init__(self, path: str, budget: int = 512 << 20):
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise UserError("replay", f"activations.npz cannot be read: {exc}", "the run is damaged; re-run torchlens extract") from exc
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
            raise UserError("replay", f"activations.npz has no array {key!r}", "the run is damaged; re-run torchlens extract")
        if info.compress_type != zipfile.ZIP_STORED:
            raise UserError("replay", f"array {key!r} is compressed; torchlens runs store arrays uncompressed", None)
        self._fp.seek(info.header_offset)
        local = self._fp.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise UserError("replay", f"array {key!r}: damaged local header", "the run is damaged; re-run torchlens extract")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        self._fp.seek(info.header_offset + 30 + name_len + extra_len)
        data = self._fp.read(info.file_size)
        if len(data) != info.file_size:
            raise UserError("replay", f"array {key!r} is cut short", "the run is damaged; re-run torchlens extract")
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(buf)
        if dtype.hasobject:
            raise UserError("replay", f"array {key!r} holds Python objects; refusing to load it", None)
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


# -- comparing ------------------------------------------------------------------------------------------

def compare(got: np.ndarray, want: np.ndarray, dtype: str) -> Dict[str, Any]:
    """Whether two arrays agree for this dtype, with the largest error and where it is."""
    if got.shape != want.shape:
        return {"ok": False, "reason": f"shape {list(got.shape)} instead of {list(want.shape)}"}
    if got.dtype != want.dtype:
        return {"ok": False, "reason": f"dtype {got.dtype} instead of {want.dtype}"}
    if got.size == 0:
        return {"ok": True, "max_abs_err": 0.0}
    if want.dtype.kind in "biu":
        diff = np.asarray(got != want)
        n = int(np.count_nonzero(diff))
        if n:
            at = int(np.flatnonzero(diff.reshape(-1))[0])
            return {"ok": False, "reason": f"{n} of {got.size} values differ", "at": at, "max_abs_err": None}
        return {"ok": True, "max_abs_err": 0.0}
    rtol, atol = TOLERANCE.get(dtype, _DEFAULT_FLOAT_TOL)
    got, want = got.reshape(-1), want.reshape(-1)  # 0-d arrays too: element assignment below needs an array
    g = got.astype(np.complex128 if want.dtype.kind == "c" else np.float64, copy=False)
    w = want.astype(g.dtype, copy=False)
    same_nan = np.isnan(g) & np.isnan(w)
    err = np.abs(g - w)
    err[same_nan] = 0.0
    both_inf = np.isinf(g) & np.isinf(w) & (g == w)
    err[both_inf] = 0.0
    bad = ~(err <= atol + rtol * np.abs(w))
    bad[same_nan | both_inf] = False
    flat = err.reshape(-1)
    finite = np.where(np.isnan(flat), np.inf, flat)
    at = int(np.argmax(finite))
    max_err = float(finite[at])
    if np.any(bad):
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        return {"ok": False, "reason": f"{int(np.count_nonzero(bad))} of {got.size} values outside tolerance (rtol {rtol}, atol {atol})",
                "at": first, "max_abs_err": max_err}
    return {"ok": True, "max_abs_err": max_err}


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _perturbed(t: Tensor, gen: torch.Generator) -> Optional[Tensor]:
    """A tensor of the same shape, dtype and device whose values differ everywhere we can make them."""
    if t.is_nested:
        return None
    if t.numel() == 0:
        return None
    if t.is_quantized:
        if t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return None
        moved = t.dequantize() + torch.randn(t.shape, generator=gen) * (float(t.dequantize().abs().max()) + 1.0)
        return torch.quantize_per_tensor(moved, t.q_scale(), t.q_zero_point(), t.dtype)
    if t.dtype == torch.bool:
        return ~t
    if t.is_floating_point() or t.is_complex():
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)
        wide = torch.complex128 if t.is_complex() else torch.float64
        base = t.detach().to(wide)
        finite = torch.isfinite(base)
        # NaN and ±inf stay NaN and inf whatever is added: those entries become finite values, so
        # that the child can change (log of negatives in a loop gives an all-NaN parent)
        magnitude = base.abs()[finite]
        scale = (float(magnitude.max()) if magnitude.numel() else 0.0) + 1.0
        noise = noise * (1 + 1j) if t.is_complex() else noise
        moved = torch.where(finite, base + noise * scale, noise * scale)
        return moved.to(t.dtype)
    # Integers move up by a random 1..997 each: every value changes, and so do sums, floor
    # divisions and remainders of them (nearly always; a permutation would leave sums alone). An
    # index pushed out of range makes the op raise, which counts as a change.
    step = torch.randint(1, 998, t.shape, generator=gen).to(device=t.device, dtype=t.dtype)
    return t.detach() + step


def _more_perturbations(t: Tensor, gen: torch.Generator) -> List[Tensor]:
    """Further candidates for a float parent whose first perturbation changed nothing: fresh
    values of both signs, then positive ones, then small ones (a saturated op moves near zero)."""
    if t.is_nested or t.numel() == 0 or t.is_quantized:
        return []
    fresh = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)
    return [(fresh * 3).to(t.dtype), (fresh.abs() * 3 + 0.5).to(t.dtype), (fresh * 0.1).to(t.dtype)]


# -- the validation session -----------------------------------------------------------------------------

class ValidationSession(CaptureSession):
    """A capture that checks each pass against the saved run instead of sending it."""

    def __init__(self, wire, model, expected: List[Dict[str, Any]], arrays: RunArrays, check_dependence: bool = True,
                 max_repr: int = 64):
        super().__init__(wire, model, save="none", max_repr=max_repr)
        self.expected = {e["id"]: e for e in expected}
        self.arrays = arrays
        self.check_dependence = check_dependence
        self.replay = self._call
        self._ctx: Optional[Tuple[Callable, tuple, Dict[str, Any], Any]] = None
        self._gen = torch.Generator().manual_seed(1234)
        self._params = {address: p for address, p in model.named_parameters()}
        self.counts = {"passed": 0, "failed": 0, "exempt": 0}

    # -- the wrapper's path during validation --------------------------------------------------------

    def _call(self, orig: Callable, func: str, qualname: str, args: tuple, kwargs: Dict[str, Any]) -> Any:
        first_new_id = self.next_id
        rng = _rng_state()
        t0 = time.perf_counter()
        out = orig(*args, **kwargs)
        elapsed = time.perf_counter() - t0
        self._ctx = (orig, args, kwargs, rng)
        try:
            self.on_call(func, qualname, args, kwargs, out, first_new_id, elapsed)
        finally:
            self._ctx = None
        return out

    # -- each recorded pass ----------------------------------------------------------------------------

    def _emit(self, t: Tensor, record: Dict[str, Any]) -> None:
        record["shape"] = shape_of(t)
        record["dtype"] = dtype_name(t.dtype)
        pid = record["id"]
        verdict: Dict[str, Any] = {"type": "verdict", "id": pid, "func": record["func"], "status": "passed",
                                   "reason": None, "max_abs_err": None, "at": None, "compared_with": None,
                                   "random": False, "dependence": []}
        expected = self.expected.get(pid)
        if expected is None or expected["func"] != record["func"] or expected["shape"] != record["shape"] \
                or expected["dtype"] != record["dtype"]:
            what = "nothing" if expected is None else f"{expected['func']}{expected['shape']} {expected['dtype']}"
            verdict.update(status="failed", reason=f"the forward pass differs from the saved run here: it made "
                           f"{record['func']}{record['shape']} {record['dtype']} where the run has {what}")
            return self._send(verdict)
        live_parents = [pid for pid, _ in record["parents"]]
        if "parents" in expected and expected["parents"] != live_parents:
            verdict.update(status="failed", reason=f"the run records parents {expected['parents']} (pass ids) but the "
                           f"forward pass gives {live_parents}: the log's edges are wrong")
            return self._send(verdict)
        if record["func"] in UNINITIALIZED:
            verdict.update(status="exempt", reason=EXEMPT["uninitialized"][0])
        elif record["func"] == VIEW_WRITE or record["kind"] not in ("op", "internal") or self._ctx is None:
            self._check_source(t, expected, verdict)
        else:
            self._check_op(t, record, expected, verdict)
        self._send(verdict)

    def _send(self, verdict: Dict[str, Any]) -> None:
        self.counts[verdict["status"]] = self.counts.get(verdict["status"], 0) + 1
        self.wire.send(verdict)

    def _saved(self, expected: Dict[str, Any]) -> Optional[np.ndarray]:
        return self.arrays.get(expected["array"]) if expected.get("array") else None

    def _check_source(self, live: Tensor, expected: Dict[str, Any], verdict: Dict[str, Any]) -> None:
        """Inputs, buffers, constants, outputs: the saved array must be the live value."""
        saved = self._saved(expected)
        if saved is None:
            verdict.update(status="exempt", reason="not saved (--layers)", compared_with=None)
            return
        got, _ = tensor_bytes(live)
        result = compare(got, saved, expected["dtype"])
        verdict.update(compared_with="live", max_abs_err=result.get("max_abs_err"), at=result.get("at"))
        if not result["ok"]:
            verdict.update(status="failed", reason=f"saved array differs from the live value: {result['reason']}")

    def _tensor_for(self, parent_id: int, live: Tensor) -> Tensor:
        """The parent's saved array as a tensor like the live one (dtype, device), or the live value."""
        expected = self.expected.get(parent_id)
        saved = self._saved(expected) if expected else None
        if live.is_nested:  # saved zero-padded: the live value is the only nested one there is
            return live
        if saved is None:
            return _fresh(live.detach())
        if live.is_quantized:
            return _requantize(saved, live)
        t = torch.from_numpy(np.array(saved, copy=True))
        if t.dtype != live.dtype:
            t = t.to(live.dtype)
        return t.to(live.device)

    def _check_op(self, live: Tensor, record: Dict[str, Any], expected: Dict[str, Any], verdict: Dict[str, Any]) -> None:
        orig, args, kwargs, rng_before = self._ctx  # type: ignore[misc]
        random = rng_before is not None and not _rng_equal(rng_before, _rng_state())
        verdict["random"] = random
        parents: Dict[str, Tensor] = {}
        for pid, pos in record["parents"]:
            live_parent = _at_position(args, kwargs, pos)
            parents[pos] = self._tensor_for(pid, live_parent)

        def replay(replacements: Dict[str, Tensor]) -> Any:
            r_args, r_kwargs = _substitute(args, kwargs, replacements)
            if random:
                after = _rng_state()
                _set_rng_state(rng_before)
                try:
                    out = orig(*r_args, **r_kwargs)
                finally:
                    _set_rng_state(after)
            else:
                out = orig(*r_args, **r_kwargs)
            if out is None and record["inplace"] and r_args:
                out = r_args[0]  # __setitem__ returns None; its result is the mutated tensor
            return out

        try:
            with torch.no_grad():
                out = replay({k: _fresh(v) for k, v in parents.items()})
        except Exception as exc:  # noqa: BLE001 - a replay that raises is a failed check, reported as such
            verdict.update(status="failed", reason=f"replay raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        replayed = get_at(out, record["out_index"]) if record["out_index"] is not None else out
        if not isinstance(replayed, Tensor):
            verdict.update(status="failed", reason=f"replay returned {type(replayed).__name__}, not a tensor")
            return
        got, _ = tensor_bytes(replayed)
        saved = self._saved(expected)
        if saved is None:
            want, _ = tensor_bytes(live)
            verdict["compared_with"] = "live"
        else:
            want = saved
            verdict["compared_with"] = "saved"
        result = compare(got, want, expected["dtype"])
        verdict.update(max_abs_err=result.get("max_abs_err"), at=result.get("at"))
        if not result["ok"]:
            source = "saved array" if saved is not None else "live value"
            verdict.update(status="failed", reason=f"replay differs from the {source}: {result['reason']}")
            return
        if self.check_dependence:
            self._check_dependence(record, parents, replay, got, expected["dtype"], verdict,
                                   outputs_in_order(out) if record["out_index"] is not None else None)

    @staticmethod
    def _remainder_by_one(record: Dict[str, Any], position: str) -> Optional[str]:
        """`x % 1`: the dividend (argument 0) cannot matter when the divisor (a number) is ±1."""
        if record["func"] not in _REMAINDER or position != "0":
            return None
        divisor = record["args"].get("1", record["args"].get("k:other"))
        return "remainder-by-one" if divisor in (1, -1) and not isinstance(divisor, bool) else None

    def _zero_parameters(self, record: Dict[str, Any]) -> Optional[str]:
        return "zero-parameters" if any(_all_zero(self._params.get(a)) for a in record["params"]) else None

    def _check_dependence(self, record, parents, replay, reference: np.ndarray, dtype: str, verdict,
                          full_reference: Optional[List[Tensor]] = None) -> None:
        checks = verdict["dependence"]
        other_output: set = set()  # parents that moved another output of the same call
        if reference.size == 0:  # nothing to change: an empty output depends on nothing's values
            checks.extend({"parent": pid, "position": pos, "status": "exempt", "rule": "empty"} for pid, pos in record["parents"])
            return
        seen = set()
        for pid, pos in record["parents"]:
            if pid in seen:
                continue
            seen.add(pid)
            rule = exemption(record["func"], pos, None)
            if rule:
                checks.append({"parent": pid, "position": pos, "status": "exempt", "rule": rule})
                continue
            perturbed = _perturbed(parents[pos], self._gen)
            if perturbed is None:
                rule = "empty" if parents[pos].numel() == 0 else "unperturbable"
                checks.append({"parent": pid, "position": pos, "status": "exempt", "rule": rule})
                continue
            def attempt(pid: int = pid, perturbed: Tensor = perturbed) -> bool:
                replacements = {k: _fresh(v) for k, v in parents.items()}
                for other_pid, other_pos in record["parents"]:
                    if other_pid == pid:
                        replacements[other_pos] = _fresh(perturbed)
                try:
                    with torch.no_grad():
                        out = replay(replacements)
                    changed_t = get_at(out, record["out_index"]) if record["out_index"] is not None else out
                    got, _ = tensor_bytes(changed_t)
                    if not _identical(got, reference):
                        return True
                    if full_reference is not None and _any_changed(out, full_reference):
                        other_output.add(pid)
                    return False
                except Exception:  # noqa: BLE001 - the op reads this argument's values: it raised on others
                    return True

            # Kernels from extensions (torchvision's roi_align, ...) may not check their inputs: a
            # perturbed box whose batch index is out of range crashes the process. Those replay in a
            # forked child; a child that dies counts as a change (it read the values).
            def run(candidate: Tensor, foreign: bool = _foreign(record)) -> bool:
                return _isolated(lambda: attempt(perturbed=candidate)) if foreign else attempt(perturbed=candidate)

            changed = run(perturbed)
            if not changed and parents[pos].is_floating_point():
                # Values of another sign or size: an op defined on part of the line (log, sqrt of
                # negatives) or saturating (tanh of large values) may ignore one shift but not all.
                changed = any(run(other) for other in _more_perturbations(parents[pos], self._gen))
            if changed:
                checks.append({"parent": pid, "position": pos, "status": "changed", "rule": None})
                continue
            rule = exemption(record["func"], pos, False) or self._zero_parameters(record) or \
                self._remainder_by_one(record, pos) or \
                ("quantized" if parents[pos].is_quantized else None) or \
                ("other-output" if pid in other_output else None) or \
                ("non-finite" if reference.dtype.kind in "fc" and not np.isfinite(reference).any() else None)
            if rule:
                checks.append({"parent": pid, "position": pos, "status": "exempt", "rule": rule})
            else:
                checks.append({"parent": pid, "position": pos, "status": "unchanged", "rule": None})
                verdict.update(status="failed", reason=f"perturbing parent {pid} (argument {pos}) did not change this "
                               f"pass: the recorded edge may be wrong")


# -- helpers ------------------------------------------------------------------------------------------

def _foreign(record: Dict[str, Any]) -> bool:
    """An op from a C++ extension rather than torch itself (torch.ops.<namespace> other than aten)."""
    qualname = record.get("qualname") or ""
    return qualname.startswith("torch.ops.") and not qualname.startswith("torch.ops.aten.")


def _isolated(attempt: Callable[[], bool]) -> bool:
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


def _any_changed(out: Any, reference: List[Tensor]) -> bool:
    now = outputs_in_order(out)
    return len(now) != len(reference) or any(
        not _identical(tensor_bytes(a)[0], tensor_bytes(b)[0]) for a, b in zip(now, reference))


def _fresh(t: Tensor) -> Tensor:
    """A copy an in-place replay may write to (quantized tensors cannot be cloned; ops on them
    are not in place)."""
    return t if t.is_quantized or t.is_nested else t.clone()


def _requantize(saved: np.ndarray, live: Tensor) -> Tensor:
    """A quantized tensor from its saved integer representation and the live tensor's scales."""
    ints = torch.from_numpy(np.array(saved, copy=True))
    if live.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return torch._make_per_tensor_quantized_tensor(ints, live.q_scale(), live.q_zero_point())
    return torch._make_per_channel_quantized_tensor(ints, live.q_per_channel_scales(), live.q_per_channel_zero_points(),
                                                    live.q_per_channel_axis())


def _all_zero(t: Optional[Tensor]) -> bool:
    return t is not None and t.numel() > 0 and not bool(torch.any(t.detach() != 0))


def _at_position(args: tuple, kwargs: Dict[str, Any], pos: str) -> Tensor:
    if pos.startswith("k:"):
        rest = pos[2:]
        key, _, sub = rest.partition(".")
        return get_at(kwargs[key], sub)
    return get_at(args, pos)


def _substitute(args: tuple, kwargs: Dict[str, Any], replacements: Dict[str, Tensor]) -> Tuple[tuple, Dict[str, Any]]:
    positional = {k: v for k, v in replacements.items() if not k.startswith("k:")}
    keyword = {k[2:]: v for k, v in replacements.items() if k.startswith("k:")}
    new_args = map_tensors_at(args, lambda path, t: positional.get(path, t))
    new_kwargs = map_tensors_at(kwargs, lambda path, t: keyword.get(path, t))
    return new_args, new_kwargs


def _rng_state() -> Any:
    state: List[Any] = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.append(torch.cuda.get_rng_state_all())
    return state


def _rng_equal(a: Any, b: Any) -> bool:
    if not torch.equal(a[0], b[0]):
        return False
    if len(a) > 1 and len(b) > 1:
        return all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    return True


def _set_rng_state(state: Any) -> None:
    torch.set_rng_state(state[0])
    if len(state) > 1:
        torch.cuda.set_rng_state_all(state[1])


def outputs_in_order(out: Any) -> List[Tensor]:
    return [t for _, t in iter_tensors(out)]
