"""Exemptions from the dependence check: the rules under which a parent that did not change its
child is not an error (`EXEMPT`, named in the report), and the lookups that pick the rule.
"""

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

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


def _all_zero(t: Optional[Tensor]) -> bool:
    return t is not None and t.numel() > 0 and not bool(torch.any(t.detach() != 0))


def remainder_by_one(record: Dict[str, Any], position: str) -> Optional[str]:
    """`x % 1`: the dividend (argument 0) cannot matter when the divisor (a number) is ±1."""
    if record["func"] not in _REMAINDER or position != "0":
        return None
    divisor = record["args"].get("1", record["args"].get("k:other"))
    return "remainder-by-one" if divisor in (1, -1) and not isinstance(divisor, bool) else None


def zero_parameters(record: Dict[str, Any], params: Mapping[str, Tensor]) -> Optional[str]:
    """A parameter the op used (`params`: the model's, by address) is all zeros."""
    return "zero-parameters" if any(_all_zero(params.get(a)) for a in record["params"]) else None
