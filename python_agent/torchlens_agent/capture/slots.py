"""The sequence slot of torch.Tensor, kept as it was while the wrappers are installed.

Setting a Python `__getitem__` on torch.Tensor (our wrapper) makes CPython fill the type's
sequence slot `sq_item` too, and deleting it again does not clear it: from then on every tensor
passes PySequence_Check, and torch.tensor([t0, t1]) with 0-d tensors calls len() on them and
raises "len() of a 0-d tensor". Indexing goes through the mapping slot, so the sequence slot can
be put back as it was, which only ctypes can do.
"""

import ctypes
import sys
from typing import Optional


class _SequenceMethods(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "sq_length", "sq_concat", "sq_repeat", "sq_item", "was_sq_slice", "sq_ass_item", "was_sq_ass_slice",
        "sq_contains", "sq_inplace_concat", "sq_inplace_repeat")]


# PyTypeObject: ob_refcnt, ob_type, ob_size, then tp_name, tp_basicsize, tp_itemsize, tp_dealloc,
# tp_vectorcall_offset, tp_getattr, tp_setattr, tp_as_async, tp_repr, tp_as_number, tp_as_sequence
_AS_SEQUENCE = ctypes.sizeof(ctypes.c_ssize_t) * 3 + ctypes.sizeof(ctypes.c_void_p) * 10


def _sequence_methods(cls: type) -> Optional[_SequenceMethods]:
    if sys.implementation.name != "cpython" or not _layout_as_expected(cls):
        return None
    address = ctypes.c_void_p.from_address(id(cls) + _AS_SEQUENCE).value
    return _SequenceMethods.from_address(address) if address else None


def _layout_as_expected(cls: type) -> bool:
    """The type object starts as assumed (not a free-threaded or debug build): its tp_name, right
    after the object header, is the class's name."""
    try:
        name = ctypes.c_char_p.from_address(id(cls) + ctypes.sizeof(ctypes.c_ssize_t) * 3).value
    except (ValueError, OSError):
        return False
    return name is not None and name.decode(errors="replace").split(".")[-1] == cls.__name__


def sq_item(cls: type) -> Optional[int]:
    """The type's sequence slot `sq_item` (None where it has none or the layout is not as assumed)."""
    methods = _sequence_methods(cls)
    return methods.sq_item if methods is not None else None


def set_sq_item(cls: type, value: Optional[int]) -> None:
    """Put back a slot `sq_item` returned (no-op where the layout is not as assumed)."""
    methods = _sequence_methods(cls)
    if methods is not None:
        methods.sq_item = value
