"""Which callables are ops, and what their names say: the namespaces wrapped, the names left
alone, `label_name` (the record's `name`), in-place detection, fused kernels' notes.

Decided by name only, once per function where it can be: nothing here looks at a tensor.
"""

import re
import types
from typing import Any, Dict, List, Tuple

import torch

# The namespaces whose functions are wrapped, with the prefix of their qualnames.
NAMESPACES: List[Tuple[str, Any]] = [
    ("torch.nn.functional", torch.nn.functional),
    ("torch", torch),
    ("torch.linalg", getattr(torch, "linalg", None)),
    ("torch.fft", getattr(torch, "fft", None)),
    ("torch.special", getattr(torch, "special", None)),
]

# Callables that never produce a tensor from tensors, or that manage torch itself.
_SKIP_NAMES = frozenset(
    """
    typename is_tensor is_storage numel compile load save manual_seed seed initial_seed
    default_generator get_rng_state set_rng_state get_default_dtype set_default_dtype
    set_default_tensor_type set_printoptions set_grad_enabled no_grad enable_grad inference_mode
    is_grad_enabled is_inference_mode_enabled set_flush_denormal set_num_threads get_num_threads
    set_num_interop_threads get_num_interop_threads set_anomaly_enabled is_anomaly_enabled
    use_deterministic_algorithms are_deterministic_algorithms_enabled result_type can_cast
    promote_types broadcast_shapes vmap cond export classproperty compiled_with_cxx11_abi
    import_ir_module import_ir_module_from_buffer fork wait sym_int sym_float sym_not sym_max
    sym_min sym_ite sym_sqrt sym_sum unravel_index_shape chunk_size _assert assert_async
    annotate autocast_decrement_nesting autocast_increment_nesting clear_autocast_cache
    has_torch_function has_torch_function_unary has_torch_function_variadic
    handle_torch_function boolean_dispatch get_device get_file_path is_autocast_enabled
    is_nonzero is_same_size is_floating_point is_complex is_conj is_neg is_signed
    is_distributed is_inference is_vulkan_available frombuffer_shape from_dlpack_shape
    """.split()
)
_SKIP_PREFIXES = ("is_", "set_", "get_", "use_", "are_", "has_", "_")
# Private C functions of torch that torch's own Python calls and that compute tensors
# (`_VF._pack_padded_sequence`, `torch._weight_norm`, `torch._unique2`): ops, except these.
_PRIVATE_SKIP = frozenset("_assert _assert_async _has_compatible_shallow_copy_type _use_cudnn_rnn_flatten_weight "
                          "_cudnn_rnn_flatten_weight _is_functional_tensor _sync _enable_functionalization "
                          "_disable_functionalization".split())


def is_private_op_name(name: str) -> bool:
    """A private C function of torch (`_weight_norm`) that is an op."""
    return (name.startswith("_") and not name.startswith("__") and name not in _PRIVATE_SKIP
            and is_op_name(name[1:]))


# Tensor attributes that are not ops (metadata, conversions out of torch, autograd plumbing).
TENSOR_SKIP = frozenset(
    """
    __class__ __init__ __new__ __getattribute__ __setattr__ __delattr__ __dir__ __repr__
    __str__ __format__ __hash__ __reduce__ __reduce_ex__ __setstate__ __getstate__ __deepcopy__
    __torch_function__ __torch_dispatch__ __subclasshook__ __init_subclass__ __sizeof__ __len__
    __bool__ __nonzero__ __index__ __int__ __long__ __float__ __complex__ __array__ __array_wrap__
    __array_priority__ __contains__ __dlpack__ __dlpack_device__ __weakref__ __dict__ __module__
    __doc__ __cuda_array_interface__ __iter__ __reversed__ __delitem__ __annotations__ __slots__
    dim ndimension size numel nelement stride storage_offset element_size item tolist numpy
    data_ptr storage untyped_storage _storage get_device is_contiguous is_floating_point
    is_complex is_signed is_set_to is_shared is_pinned is_same_size is_nonzero is_inference
    is_coalesced is_conj is_neg backward register_hook retain_grad requires_grad_ share_memory_
    record_stream pin_memory dim_order has_names refine_names rename rename_ align_to
    align_as unflatten_names names data grad grad_fn requires_grad is_leaf output_nr _version
    _base _cdata shape dtype device layout is_cuda is_sparse is_quantized is_meta is_mkldnn
    is_mps is_ort is_vulkan is_xpu is_ipu is_xla is_nested is_sparse_csr itemsize nbytes ndim
    retains_grad _backward_hooks _grad _grad_fn _python_dispatch _post_accumulate_grad_hooks
    map_ map2_ apply_ new_tensor_shape type_as_shape q_scale q_zero_point qscheme
    q_per_channel_axis dense_dim sparse_dim _nnz _is_view _is_zerotensor __torch_function_impl
    """.split()
)
# Tensor properties that return a tensor: wrapped as properties.
TENSOR_PROPERTIES = ("T", "mT", "H", "mH", "real", "imag")
# Calls whose own work is printing or copying out: capture pauses inside them.
TENSOR_PAUSE = ("__repr__", "__str__", "__format__", "__array__", "tolist", "numpy", "item")

# What the completeness check (validation/completeness.py) does not count: the calls capture leaves alone.
NOT_OPS = TENSOR_SKIP | frozenset(TENSOR_PAUSE) | _SKIP_NAMES

INPLACE_DUNDERS = frozenset(
    "__iadd__ __isub__ __imul__ __itruediv__ __idiv__ __ifloordiv__ __imod__ __ipow__ __iand__ "
    "__ior__ __ixor__ __ilshift__ __irshift__ __imatmul__ __setitem__".split()
)
# torch.ops namespaces left alone: the profiler's and the compiler's own.
SKIP_OP_NAMESPACES = frozenset({"profiler", "prims", "nvprims", "pyops", "inductor", "higher_order", "_quantized_decomposed"})


# Fused kernels that compute, in one op, what torch otherwise does in many: the log says so, and
# which flag shows the inside (docs/capture.md).
FUSED_NOTES = {
    "_transformer_encoder_layer_fwd": "torch's fused fast path for a whole nn.TransformerEncoderLayer (eval mode, "
                                      "autograd off): its attention and feed-forward ops run inside this one kernel; "
                                      "extract with --grad to record them one by one",
    "_native_multi_head_attention": "torch's fused fast path for nn.MultiheadAttention (eval mode, autograd off): "
                                    "the projections, attention weights and softmax run inside this one kernel; "
                                    "extract with --grad to record them one by one",
    "scaled_dot_product_attention": "a fused attention kernel: the attention weights and their softmax are computed "
                                    "inside it and are not passes of their own (modules called with "
                                    "need_weights=True compute them op by op)",
}

# The pass made for the base of a view written in place (`y = x[:, 0]; y.add_(1)` changes x).
VIEW_WRITE = "view_write"

# What a wrapped callable may be: Python functions, C functions, method and slot descriptors.
FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
                  types.WrapperDescriptorType, types.BuiltinMethodType)


def label_name(func: str) -> str:
    """The name an op has in labels and selectors: `__add__` → `add`, `relu_` → `relu`, `T` → `t`.

    Defined here only: every record carries it as `name`, and the CLI uses that.
    """
    name = re.sub(r"[^a-z0-9_]+", "_", func.lower()).strip("_")
    return name or "op"


def is_op_name(name: str) -> bool:
    """A public name of a torch namespace that is an op (not metadata, not torch's own management)."""
    return name not in _SKIP_NAMES and not name.startswith(_SKIP_PREFIXES)


_INPLACE_BY_NAME: Dict[str, bool] = {}


# Ops that write to arguments their names do not mark as in-place: batch norm's running statistics.
_WRITES_STATE = frozenset("batch_norm native_batch_norm _native_batch_norm_legit _batch_norm_impl_index "
                          "cudnn_batch_norm miopen_batch_norm instance_norm _batch_norm_with_update "
                          "_native_batch_norm_legit_functional".split())


def writes_arguments(func: str) -> bool:
    """The op may change a tensor it is given (`add_`, `x[i] = v`, batch norm's running stats): the
    tensors it reads from outside the pass must be recorded before it runs."""
    return is_inplace(func, {}) or func in _WRITES_STATE


def is_inplace(func: str, kwargs: Dict[str, Any]) -> bool:
    """The call mutates its input: the record's `inplace` (`add_`, `__iadd__`, `__setitem__`, `out=`)."""
    by_name = _INPLACE_BY_NAME.get(func)
    if by_name is None:
        by_name = _INPLACE_BY_NAME[func] = func in INPLACE_DUNDERS or (func.endswith("_") and not func.endswith("__"))
    return by_name or (bool(kwargs) and kwargs.get("out") is not None)


# torch.func's transforms that return a transformed function, and those that compute at once.
FUNC_TRANSFORMS = ("vmap", "grad", "grad_and_value", "jacrev", "jacfwd", "hessian", "functionalize")
FUNC_CALLS = ("jvp", "vjp", "linearize")

