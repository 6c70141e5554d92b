"""CaptureSession records (docs/wire.md, "The op record"): parents and positions, parameters, buffers,
in-place ops, nested functions, multi-output calls, sources, modules, and the saved bytes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent_testlib import Fn, capture, expected_bytes


def ids_of(records):
    return [r["id"] for r in records]


# -- parents and argument positions ----------------------------------------------------------------

def test_cat_parents_carry_nested_list_positions(device):
    a, b = torch.randn(2, 3, device=device), torch.randn(2, 4, device=device)
    cap = capture(Fn(lambda a, b: torch.cat([a, b], dim=1)), a, b)
    ia, ib = ids_of(cap.of_kind("input"))
    rec = cap.one("cat")
    assert rec["parents"] == [[ia, "0.0"], [ib, "0.1"]]
    assert rec["args"]["k:dim"] == 1
    assert rec["kind"] == "op" and rec["qualname"] == "torch.cat"
    assert rec["shape"] == [2, 7] and rec["device"] == str(a.device)


def test_keyword_tensor_arguments_are_parents_with_k_positions(device):
    x, w = torch.randn(2, 3, device=device), torch.randn(4, 3, device=device)
    cap = capture(Fn(lambda x, w: F.linear(x, weight=w)), x, w)
    ix, iw = ids_of(cap.of_kind("input"))
    assert cap.one("linear")["parents"] == [[ix, "0"], [iw, "k:weight"]]


def test_each_op_names_the_pass_of_its_operands(device):
    def forward(x):
        a = x * 2
        b = a.sigmoid()
        return a - b

    cap = capture(Fn(forward), torch.randn(3, device=device))
    (ix,) = ids_of(cap.of_kind("input"))
    mul, sig, sub = cap.one("__mul__"), cap.one("sigmoid"), cap.one("__sub__")
    assert mul["parents"] == [[ix, "0"]] and mul["args"] == {"1": 2}
    assert sig["parents"] == [[mul["id"], "0"]]
    assert sub["parents"] == [[mul["id"], "0"], [sig["id"], "1"]]
    ids = ids_of(cap.records)
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] == 1, "pass ids are not 1, 2, 3, ..."


def test_reflected_operator_is_recorded_once_with_the_tensor_as_parent(device):
    cap = capture(Fn(lambda x: 1 - x), torch.randn(3, device=device))
    (ix,) = ids_of(cap.of_kind("input"))
    rec = cap.one("__rsub__")
    assert rec["parents"] == [[ix, "0"]]
    assert cap.funcs() == ["__rsub__"]


# -- parameters, buffers, constants ----------------------------------------------------------------

class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc2(self.fc1(x))


def test_linear_lists_its_parameters_by_address_not_as_parents(device):
    model = TwoLinear().to(device)
    cap = capture(model, torch.randn(5, 4, device=device))
    (ix,) = ids_of(cap.of_kind("input"))
    l1, l2 = cap.named("linear")
    assert l1["params"] == ["fc1.weight", "fc1.bias"]
    assert l1["parents"] == [[ix, "0"]]
    assert l2["params"] == ["fc2.weight"]
    assert l2["parents"] == [[l1["id"], "0"]]
    assert not cap.of_kind("constant"), "a parameter was recorded as a constant"


def test_parameter_used_directly_in_forward_is_a_param_not_a_parent(device):
    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3))

        def forward(self, x):
            return x @ self.w.T

    cap = capture(Direct().to(device), torch.randn(2, 3, device=device))
    t = cap.one("T")
    assert t["params"] == ["w"] and t["parents"] == [] and t["kind"] == "op"
    (mm,) = [r for r in cap.of_kind("op") if t["id"] in cap.parents(r)]  # __matmul__, or matmul inside it
    assert cap.parents(mm) == [ids_of(cap.of_kind("input"))[0], t["id"]]
    assert mm["params"] == []


def test_parameter_keeps_its_identity_after_a_no_op_conversion(device):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            w = self.lin.weight.float()  # already float32: torch returns the Parameter itself
            return self.lin(x) + w.sum()

    cap = capture(Model().to(device), torch.randn(2, 3, device=device))
    linear = cap.one("linear")
    assert linear["params"] == ["lin.weight", "lin.bias"]
    assert [pos for _, pos in linear["parents"]] == ["0"]


class TwiceBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        stats = {"running_mean": [0.5, -1.0, 2.0], "running_var": [1.5, 0.25, 4.0]}
        with torch.no_grad():
            for name, value in stats.items():
                getattr(self.bn, name).copy_(torch.tensor(value))

    def forward(self, x):
        return self.bn(self.bn(x))


def test_batchnorm_buffers_become_buffer_sources_once(device):
    model = TwiceBN().to(device).eval()
    cap = capture(model, torch.randn(4, 3, device=device))
    buffers = cap.of_kind("buffer")
    assert sorted(b["address"] for b in buffers) == ["bn.running_mean", "bn.running_var"]
    by_addr = {b["address"]: b for b in buffers}
    for b in buffers:
        assert b["parents"] == [] and b["func"] == "buffer"
        assert np.array_equal(cap.array(b["id"]), expected_bytes(getattr(model.bn, b["address"].split(".")[1])))
    bn1, bn2 = cap.named("batch_norm")
    for rec in (bn1, bn2):
        assert rec["params"] == ["bn.weight", "bn.bias"]
        assert {by_addr["bn.running_mean"]["id"], by_addr["bn.running_var"]["id"]} <= set(cap.parents(rec))
    assert bn2["parents"][0] == [bn1["id"], "0"]


def test_tensor_attribute_that_is_not_a_buffer_is_a_constant_source_once(device):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.tensor([2.0, 3.0])  # plain attribute: neither parameter nor buffer

        def forward(self, x):
            return x * self.scale + self.scale

    cap = capture(Scaled(), torch.randn(4, 2))
    (const,) = cap.of_kind("constant")
    assert const["parents"] == []
    assert np.array_equal(cap.array(const["id"]), np.array([2.0, 3.0], dtype=np.float32))
    assert [const["id"], "1"] in cap.one("__mul__")["parents"]
    assert [const["id"], "1"] in cap.one("__add__")["parents"]


# -- in-place ops ----------------------------------------------------------------------------------

def test_inplace_ops_make_a_new_pass_that_later_ops_name(device):
    def forward(x, y):
        a = x * 1.0
        a.add_(1)           # method
        a += y              # operator
        a[0] = 5.0          # __setitem__ returns None: the mutated tensor is the output
        F.relu(a, inplace=True)
        return a * 2

    x, y = torch.randn(3, 4, device=device), torch.randn(3, 4, device=device)
    cap = capture(Fn(forward), x, y)
    ix, iy = ids_of(cap.of_kind("input"))
    mul = cap.named("__mul__")[0]
    add_, iadd, setitem = cap.one("add_"), cap.one("__iadd__"), cap.one("__setitem__")
    relu_ = cap.one("relu_")
    last = cap.named("__mul__")[1]
    assert not mul["inplace"] and not last["inplace"]
    chain = [mul, add_, iadd, setitem, relu_]
    for prev, rec in zip(chain, chain[1:]):
        assert rec["inplace"], f"{rec['func']} is not flagged in-place"
        assert rec["parents"][0] == [prev["id"], "0"], f"{rec['func']} does not name the pass before it"
        assert rec["id"] > prev["id"]
    assert [iy, "1"] in iadd["parents"]
    assert setitem["args"] == {"1": 0, "2": 5.0}
    assert last["parents"] == [[relu_["id"], "0"]]
    want = x * 1.0 + 1 + y
    want[0] = 5.0
    want = torch.relu(want)
    assert np.allclose(cap.array(relu_["id"]), expected_bytes(want))
    assert np.allclose(cap.array(setitem["id"]), expected_bytes(torch.where(
        torch.arange(3, device=device)[:, None] == 0, torch.tensor(5.0, device=device), x * 1.0 + 1 + y)))


def test_out_keyword_marks_the_op_in_place(device):
    def forward(x):
        buf = torch.empty(3, device=x.device)
        torch.add(x, 1, out=buf)
        return buf

    cap = capture(Fn(forward), torch.randn(3, device=device))
    assert cap.one("add")["inplace"]


# -- nested Python functions -----------------------------------------------------------------------

def test_functional_relu_is_recorded_once_as_its_inner_op(device):
    cap = capture(Fn(lambda x: F.relu(x)), torch.randn(4, device=device))
    assert cap.funcs() == ["relu"]


def test_functional_split_records_the_inner_split_once_per_chunk(device):
    cap = capture(Fn(lambda x: torch.split(x, 2, dim=0)), torch.randn(4, 3, device=device))
    assert cap.funcs() == ["split", "split"]
    a, b = cap.named("split")
    assert a["call"] == b["call"] and (a["out_index"], b["out_index"]) == ("0", "1")


def test_multihead_attention_records_its_internals_not_the_outer_call(device):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).to(device)  # training mode: torch 2.x takes no fused fast path
    model = Fn(lambda x: mha(x, x, x), mha=mha)
    cap = capture(model, torch.randn(5, 1, 8, device=device))
    funcs = cap.funcs()
    assert "multi_head_attention_forward" not in funcs
    assert "softmax" in funcs
    assert "bmm" in funcs or "baddbmm" in funcs
    linears = cap.named("linear")
    assert linears, funcs
    assert any("mha.out_proj.weight" in r["params"] for r in linears)
    assert any("mha.in_proj_weight" in r["params"] for r in linears)
    for r in cap.of_kind("op"):
        if r["kind"] == "op":
            assert ["mha", 1] in r["modules"]
    attn_out, attn_weights = cap.output_ids()
    assert cap.by_id[attn_out]["shape"] == [5, 1, 8]
    assert cap.by_id[attn_weights]["shape"] == [1, 5, 5]


def test_lstm_records_its_lstm_op_through_torch_vf(device):
    torch.manual_seed(0)
    rnn = nn.LSTM(4, 5)
    model = Fn(lambda x: rnn(x)[0], rnn=rnn).to(device)  # Module.to moves rnn in place
    cap = capture(model, torch.randn(3, 1, 4, device=device))
    lstm = cap.named("lstm")
    assert len(lstm) == 3, cap.funcs()  # output, h_n, c_n
    assert [r["out_index"] for r in lstm] == ["0", "1", "2"]
    assert len({r["call"] for r in lstm}) == 1
    (ix,) = ids_of(cap.of_kind("input"))
    assert [ix, "0"] in lstm[0]["parents"]
    assert set(lstm[0]["params"]) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"}
    assert lstm[0]["modules"][-1] == ["rnn", 1]
    out_id, = cap.output_ids()
    assert cap.producer(out_id)["id"] == lstm[0]["id"]


# -- multi-output calls ----------------------------------------------------------------------------

def test_max_with_dim_gives_one_record_per_output_sharing_a_call(device):
    x = torch.randn(3, 5, device=device)
    cap = capture(Fn(lambda x: torch.max(x, dim=1)), x)
    values, indices = cap.named("max")
    (ix,) = ids_of(cap.of_kind("input"))
    assert values["call"] == indices["call"] is not None
    assert (values["out_index"], indices["out_index"]) == ("0", "1")
    assert values["parents"] == indices["parents"] == [[ix, "0"]]
    assert (values["dtype"], indices["dtype"]) == ("float32", "int64")
    want = torch.max(x, dim=1)
    assert np.array_equal(cap.array(values["id"]), expected_bytes(want.values))
    assert np.array_equal(cap.array(indices["id"]), expected_bytes(want.indices))


def test_chunk_gives_one_record_per_piece_with_out_index(device):
    def forward(x):
        a, b, c = x.chunk(3)
        return c + a

    cap = capture(Fn(forward), torch.randn(6, 2, device=device))
    pieces = cap.named("chunk")
    assert [r["out_index"] for r in pieces] == ["0", "1", "2"]
    assert len({r["call"] for r in pieces}) == 1
    assert cap.one("__add__")["parents"] == [[pieces[2]["id"], "0"], [pieces[0]["id"], "1"]]
    calls = [r["call"] for r in cap.of_kind("op")]
    assert calls == sorted(calls)


def test_single_output_ops_have_no_out_index(device):
    cap = capture(Fn(lambda x: x.exp()), torch.randn(2, device=device))
    assert cap.one("exp")["out_index"] is None


# -- sources born inside forward -------------------------------------------------------------------

def test_tensors_made_inside_forward_are_internal_sources(device):
    def forward(x):
        r = torch.randn(3, device=x.device)
        t = torch.tensor([1.0, 2.0], device=x.device)
        n = torch.from_numpy(np.arange(4, dtype=np.float32))
        return x.sum() + r.sum() + t.sum() + n.sum()

    torch.manual_seed(0)
    cap = capture(Fn(forward), torch.randn(2, device=device))
    for name in ("randn", "tensor", "from_numpy"):
        rec = cap.one(name)
        assert rec["kind"] == "internal", name
        assert rec["parents"] == [] and rec["params"] == []
    assert cap.one("from_numpy")["shape"] == [4]
    assert np.array_equal(cap.array(cap.one("from_numpy")["id"]), np.arange(4, dtype=np.float32))
    assert np.array_equal(cap.array(cap.one("tensor")["id"]), np.array([1.0, 2.0], dtype=np.float32))
    assert cap.one("randn")["args"]["0"] == 3


def test_tensor_properties_T_and_real_are_recorded(device):
    def forward(x, z):
        return x.T, z.real

    x = torch.randn(2, 3, device=device)
    z = torch.randn(2, 2, dtype=torch.complex64, device=device)
    cap = capture(Fn(forward), x, z)
    ix, iz = ids_of(cap.of_kind("input"))
    t, real = cap.one("T"), cap.one("real")
    assert t["parents"] == [[ix, "0"]] and t["shape"] == [3, 2] and t["qualname"] == "Tensor.T"
    assert real["parents"] == [[iz, "0"]] and real["dtype"] == "float32"
    assert np.array_equal(cap.array(t["id"]), expected_bytes(x.T))
    assert np.array_equal(cap.array(real["id"]), expected_bytes(z.real))


# -- modules ---------------------------------------------------------------------------------------

class Recur(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(3, 3)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(3, 1))

    def forward(self, x):
        h = self.cell(x)
        h = self.cell(h)
        return self.head(h)


def test_module_stack_entries_carry_call_indices(device):
    cap = capture(Recur().to(device), torch.randn(2, 3, device=device))
    l1, l2, l3 = cap.named("linear")
    assert l1["modules"] == [["", 1], ["cell", 1]]
    assert l2["modules"] == [["", 1], ["cell", 2]]
    assert l3["modules"] == [["", 1], ["head", 1], ["head.1", 1]]
    assert cap.one("relu")["modules"] == [["", 1], ["head", 1], ["head.0", 1]]
    assert all(r["modules"] == [] for r in cap.of_kind("input") + cap.of_kind("output"))


def test_module_records_list_input_and_output_passes(device):
    cap = capture(Recur().to(device), torch.randn(2, 3, device=device))
    (ix,) = ids_of(cap.of_kind("input"))
    l1, l2, l3 = cap.named("linear")
    relu = cap.one("relu")
    got = [(m["address"], m["call"], m["class"], m["inputs"], m["outputs"]) for m in cap.modules]
    assert got == [
        ("cell", 1, "Linear", [ix], [l1["id"]]),
        ("cell", 2, "Linear", [l1["id"]], [l2["id"]]),
        ("head.0", 1, "ReLU", [l2["id"]], [relu["id"]]),
        ("head.1", 1, "Linear", [relu["id"]], [l3["id"]]),
        ("head", 1, "Sequential", [l2["id"]], [l3["id"]]),
        ("", 1, "Recur", [ix], [l3["id"]]),
    ]
    # a module record comes after the ops inside it and before the ops after it
    order = [f.get("address", f.get("id")) for f in cap.wire.frames if f["type"] in ("pass", "module")]
    assert order.index("cell") > order.index(l1["id"]) and order.index("cell") < order.index(l2["id"])


# -- inputs and outputs ----------------------------------------------------------------------------

def test_dict_list_and_keyword_inputs_become_input_sources(device):
    def forward(d, items, *, scale, flag=True):
        return d["a"] * items[1] + scale if flag else d["a"]

    a, i0, i1 = (torch.randn(2, 2, device=device) for _ in range(3))
    scale = torch.tensor(3.0, device=device)
    cap = capture(Fn(forward), {"a": a}, [i0, i1], scale=scale, flag=True)
    inputs = cap.of_kind("input")
    assert [r["input_path"] for r in inputs] == ["args.0.a", "args.1.0", "args.1.1", "kwargs.scale"]
    assert [r["shape"] for r in inputs] == [[2, 2], [2, 2], [2, 2], []]
    by_path = {r["input_path"]: r["id"] for r in inputs}
    assert cap.one("__mul__")["parents"] == [[by_path["args.0.a"], "0"], [by_path["args.1.1"], "1"]]
    assert [by_path["kwargs.scale"], "1"] in cap.one("__add__")["parents"]
    assert np.array_equal(cap.array(by_path["args.1.0"]), expected_bytes(i0))


def test_outputs_structure_describes_tensors_containers_and_values(device):
    def forward(x):
        y = x + 1
        return {"y": y, "pair": (y * 2, [x]), "n": 3, "name": "ok", "none": None}

    cap = capture(Fn(forward), torch.randn(2, device=device))
    out = cap.outputs
    assert out["kind"] == "dict"
    items = out["items"]
    assert items["n"] == {"kind": "value", "repr": 3}
    assert items["name"] == {"kind": "value", "repr": "ok"}
    assert items["none"] == {"kind": "value", "repr": None}
    assert items["pair"]["kind"] == "tuple" and items["pair"]["items"][1]["kind"] == "list"
    (ix,) = ids_of(cap.of_kind("input"))
    y_out, y2_out, x_out = cap.output_ids()
    assert cap.producer(y_out)["func"] == "__add__"
    assert cap.producer(y2_out)["func"] == "__mul__"
    assert cap.producer(x_out)["id"] == ix, "an input returned as output must name the input pass"
    outputs = cap.of_kind("output")
    assert [r["id"] for r in outputs] == [y_out, y2_out, x_out]
    assert all(r["parents"][0][1] == "0" for r in outputs)


def test_num_ops_counts_every_tensor_returning_call(device):
    def forward(x):
        a = torch.relu(x)        # 1
        b = F.relu(a)            # 2 (outer) + 3 (inner torch.relu)
        c = b.view(-1)           # 4
        d = torch.max(c, dim=0)  # 5
        e = c.sum().item()       # 6 (sum); item() returns a float
        f = c.shape              # not a call
        return d.values + e + len(f)  # 7 __add__, 8 __add__

    cap = capture(Fn(forward), torch.randn(2, 3, device=device))
    assert cap.session.num_ops >= 8
    assert cap.session.torch_calls >= cap.session.num_ops
    assert cap.funcs() == ["relu", "relu", "view", "max", "max", "sum", "__add__", "__add__"]


# -- saved bytes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,descr", [
    (torch.float32, "<f4"), (torch.float64, "<f8"), (torch.float16, "<f2"), (torch.int64, "<i8"),
    (torch.int32, "<i4"), (torch.uint8, "|u1"), (torch.bool, "|b1"), (torch.complex64, "<c8"),
])
def test_saved_bytes_equal_the_tensor_bytes(device, dtype, descr):
    torch.manual_seed(0)
    x = (torch.randn(3, 4) * 5).to(dtype).to(device)
    cap = capture(Fn(lambda x: x.clone()), x)
    rec = cap.one("clone")
    assert rec["stored_dtype"] == descr and rec["dtype"] == str(dtype).replace("torch.", "")
    assert rec["stored_nbytes"] == x.numel() * x.element_size()
    got = cap.array(rec["id"])
    assert got.shape == (3, 4)
    assert np.array_equal(got, x.cpu().numpy())


def test_bfloat16_is_stored_as_float32_with_its_dtype_named(device):
    x = torch.randn(4, 3, device=device)
    cap = capture(Fn(lambda x: x.to(torch.bfloat16) * 2), x)
    rec = cap.one("__mul__")
    assert rec["dtype"] == "bfloat16" and rec["stored_dtype"] == "<f4"
    assert rec["stored_nbytes"] == 4 * 12
    want = (x.to(torch.bfloat16) * 2).float().cpu().numpy()
    assert np.array_equal(cap.array(rec["id"]), want)


def test_zero_size_and_zero_dim_tensors_are_recorded(device):
    def forward(x):
        empty = x[:0] * 2
        scalar = x.sum()
        return empty, scalar

    x = torch.randn(3, 2, device=device)
    cap = capture(Fn(forward), x)
    empty, scalar = cap.one("__mul__"), cap.one("sum")
    assert empty["shape"] == [0, 2] and empty["stored_nbytes"] == 0
    assert not cap.wire.payloads.get(empty["id"]), "a zero-size pass sent data"
    assert cap.array(empty["id"]).shape == (0, 2)
    assert scalar["shape"] == [] and scalar["stored_nbytes"] == 4
    assert cap.array(scalar["id"]).shape == ()
    assert np.isclose(cap.array(scalar["id"]), x.sum().item())


def test_non_contiguous_views_are_stored_in_c_order(device):
    def forward(x, z):
        return x.t(), x[:, ::2], x[:1].expand(3, -1), z.conj()  # conj is a lazy view too

    x = torch.arange(12, dtype=torch.float32, device=device).reshape(3, 4)
    z = torch.randn(2, 3, dtype=torch.complex64, device=device)
    cap = capture(Fn(forward), x, z)
    t, strided, expanded, conj = (cap.producer(i) for i in cap.output_ids())
    assert np.array_equal(cap.array(t["id"]), x.t().cpu().numpy())
    assert np.array_equal(cap.array(strided["id"]), x[:, ::2].cpu().numpy())
    assert np.array_equal(cap.array(expanded["id"]), x[:1].expand(3, -1).cpu().numpy())
    assert np.array_equal(cap.array(conj["id"]), np.conj(z.cpu().numpy()))
    for rec in (t, strided, expanded):
        assert rec["stored_nbytes"] == 4 * np.prod(rec["shape"])


def test_tensors_that_require_grad_are_saved(device):
    x = torch.randn(3, 3, device=device, requires_grad=True)
    model = nn.Linear(3, 3).to(device)
    cap = capture(model, x)
    (ix,) = ids_of(cap.of_kind("input"))
    rec = cap.one("linear")
    assert np.array_equal(cap.array(ix), x.detach().cpu().numpy())
    assert np.allclose(cap.array(rec["id"]), model(x).detach().cpu().numpy(), atol=1e-6)
    assert cap.result.requires_grad, "capture detached the model's real output"


def test_output_passes_save_the_returned_values(device):
    x = torch.randn(2, 5, device=device)
    cap = capture(Fn(lambda x: (x.tanh(), x.argmax(dim=1))), x)
    tanh_out, arg_out = cap.output_ids()
    assert np.array_equal(cap.array(tanh_out), x.tanh().cpu().numpy())
    assert np.array_equal(cap.array(arg_out), x.argmax(dim=1).cpu().numpy())
    assert all(r["device"] == str(x.device) for r in cap.records)


def test_each_saved_record_is_followed_by_its_data_frames(device):
    cap = capture(TwoLinear().to(device), torch.randn(2, 4, device=device))
    frames = cap.wire.frames
    for i, f in enumerate(frames):
        if f["type"] == "pass" and f["stored_nbytes"]:
            assert frames[i + 1]["type"] == "data" and frames[i + 1]["id"] == f["id"]


def test_save_none_sends_records_without_bytes(device):
    cap = capture(TwoLinear().to(device), torch.randn(2, 4, device=device), save="none")
    assert cap.records and not cap.wire.payloads
    assert all(r["stored_nbytes"] == 0 and r["stored_dtype"] is None for r in cap.records)
    assert all(r["shape"] and r["dtype"] == "float32" for r in cap.records)


# -- odd paths -------------------------------------------------------------------------------------

def test_non_tensor_arguments_are_summarised_for_json(device):
    def forward(x):
        a = x.clamp(min=0.0, max=float("inf"))
        b = a[1:, ::2, None]
        return b.to(torch.float64), x.sum(dim=(0, 1), keepdim=True)

    cap = capture(Fn(forward), torch.randn(3, 4, device=device))
    assert cap.one("clamp")["args"] == {"k:min": 0.0, "k:max": "inf"}
    assert cap.one("__getitem__")["args"] == {"1": ["1:", "::2", None]}
    assert cap.one("to")["args"] == {"1": "float64"}
    assert cap.one("sum")["args"] == {"k:dim": [0, 1], "k:keepdim": True}


def test_a_submodule_exception_caught_inside_forward_leaves_the_module_stack_clean(device):
    class Fails(nn.Module):
        def forward(self, x):
            y = x + 1
            raise ValueError("caught by the parent")

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.child = Fails()

        def forward(self, x):
            try:
                self.child(x)
            except ValueError:
                pass
            return x * 3

    cap = capture(Parent().to(device), torch.randn(2, device=device))
    assert cap.one("__add__")["modules"] == [["", 1], ["child", 1]]
    assert cap.one("__mul__")["modules"] == [["", 1]]
    assert [m["address"] for m in cap.modules] == [""], "a module that raised sent a module record"
    assert cap.session.module_stack == [] and cap.session.paused == 0


# -- private torch functions and TorchScript ---------------------------------------------------------

def test_pack_padded_sequence_records_the_private_vf_ops_that_carry_the_values(device):
    rnn = nn.GRU(3, 4, batch_first=True)

    def forward(x):
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 2]), batch_first=True)
        out, _ = rnn(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]

    cap = capture(Fn(forward, rnn=rnn).to(device), torch.randn(2, 3, 3, device=device))
    assert not cap.of_kind("constant"), cap.funcs()
    pack = cap.named("_pack_padded_sequence")
    (ix,) = ids_of(cap.of_kind("input"))
    assert any([ix, "0"] in r["parents"] for r in pack)
    assert cap.named("_pad_packed_sequence")


def test_a_torchscript_function_call_is_one_op_with_its_arguments_as_parents(device):
    @torch.jit.script
    def fused(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * y + 1.0

    cap = capture(Fn(lambda x: fused(x, x * 2)), torch.randn(2, 3, device=device))
    call = cap.one("fused")
    doubled = cap.one("__mul__")
    (ix,) = ids_of(cap.of_kind("input"))
    assert call["parents"] == [[ix, "0"], [doubled["id"], "1"]]
    assert not cap.of_kind("constant")
    out_id, = cap.output_ids()
    assert cap.producer(out_id)["id"] == call["id"]
