"""Wrappers: installing replaces torch's callables; restoring leaves torch exactly as it was, also when
the forward pass raises; with no active session the wrappers change nothing."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent_testlib import FrameCollector, Fn, parse_frames
from torchlens_agent.capture.install import Wrappers
from torchlens_agent.capture.run import run_captured
from torchlens_agent.capture.session import CaptureSession
from torchlens_agent.extract import extract
from torchlens_agent.wire import Wire

NAMESPACES = {
    "torch": torch,
    "torch.nn.functional": F,
    "torch.linalg": torch.linalg,
    "torch.fft": torch.fft,
    "torch.special": torch.special,
    "torch._VF": getattr(torch, "_VF"),
    "torch.Tensor": torch.Tensor,
    "torch.nn.Module": nn.Module,
}


def snapshot():
    return {name: dict(vars(ns)) for name, ns in NAMESPACES.items()}


def assert_torch_untouched(before):
    """Every attribute is the very object it was; nothing the wrappers added is left behind.

    Keys that appeared meanwhile are tolerated when they are not ours: torch 2.x imports some
    submodules lazily into its namespace.
    """
    for name, ns in NAMESPACES.items():
        now = vars(ns)
        changed = [k for k, v in before[name].items() if k not in now or now[k] is not v]
        assert not changed, f"{name}: not restored: {changed[:20]}"
        left = [k for k in set(now) - set(before[name]) if getattr(now[k], "_tl_wrapper", False)
                or isinstance(now[k], property)]
        assert not left, f"{name}: wrappers left behind: {sorted(left)[:20]}"
    assert nn.Module.__call__ is before["torch.nn.Module"]["__call__"]


class _Boom(Exception):
    pass


def test_restore_puts_back_every_original_attribute():
    before = snapshot()
    wrappers = Wrappers()
    wrappers.install()
    wrappers.restore()
    assert_torch_untouched(before)


def test_install_wraps_over_a_thousand_callables_in_every_namespace():
    before = snapshot()
    wrappers = Wrappers()
    wrappers.install()
    try:
        assert wrappers.count >= 1000
        replaced = {name: [k for k, v in vars(ns).items() if before[name].get(k) is not v]
                    for name, ns in NAMESPACES.items()}
        for name in NAMESPACES:
            assert replaced[name], f"nothing wrapped in {name}"
        # the callables models actually go through
        for owner, attr in [(torch, "relu"), (torch, "cat"), (F, "conv2d"), (F, "linear"), (torch.linalg, "norm"),
                            (torch.fft, "fft"), (torch.special, "expit"), (NAMESPACES["torch._VF"], "lstm"),
                            (torch.Tensor, "add"), (torch.Tensor, "__add__"), (torch.Tensor, "__setitem__"),
                            (torch.Tensor, "T"), (nn.Module, "__call__")]:
            key = "torch.nn.Module" if owner is nn.Module else next(n for n, ns in NAMESPACES.items() if ns is owner)
            assert attr in replaced[key], f"{key}.{attr} is not wrapped"
    finally:
        wrappers.restore()
    assert_torch_untouched(before)


def test_install_restore_cycles_twice_and_restore_is_idempotent():
    before = snapshot()
    for _ in range(2):
        wrappers = Wrappers()
        wrappers.install()
        wrappers.install()  # a second install is a no-op, not a second layer
        wrappers.restore()
        wrappers.restore()
        assert_torch_untouched(before)


def test_wrappers_pass_through_while_no_session_is_active():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4)
    want = (a + b, torch.relu(a), F.softmax(a, dim=1), a.T.clone(), torch.cat([a, b]), a.max(dim=1).values)
    wrappers = Wrappers()
    wire = FrameCollector()
    wrappers.install()
    try:
        CaptureSession(wire, nn.Linear(4, 4), save="all")  # made but never switched on
        got = (a + b, torch.relu(a), F.softmax(a, dim=1), a.T.clone(), torch.cat([a, b]), a.max(dim=1).values)
        model = nn.Linear(4, 2)
        y = model(a)
        y.sum().backward()
        text = repr(y)
    finally:
        wrappers.restore()
    for w, g in zip(want, got):
        assert torch.equal(w, g)
        assert vars(g) == {}, "a wrapper tagged a tensor with no session active"
    assert a.grad is not None and model.weight.grad is not None
    assert "tensor" in text
    assert wire.frames == []


def test_restore_happens_when_the_forward_pass_raises():
    def forward(x):
        y = torch.relu(x) + 1
        raise _Boom("raised inside forward")

    before = snapshot()
    wrappers = Wrappers()
    wire = FrameCollector()
    model = Fn(forward)
    wrappers.install()
    try:
        session = CaptureSession(wire, model, save="all")
        with pytest.raises(_Boom):
            run_captured(wrappers, session, model, (torch.randn(2, 2),), {})
        assert wrappers.switch.session is None, "the session stays switched on after the forward pass raised"
        assert session.module_stack == []
    finally:
        wrappers.restore()
    assert_torch_untouched(before)


# -- extract() end to end, in this process --------------------------------------------------------

@pytest.fixture
def run_extract(tmp_path):
    """Call extract() as the agent does, with the wire going to a file; yields frames and exit code."""
    saved_path = list(sys.path)
    saved_user = sys.modules.get("torchlens_user_model")

    def run(source: str, **fields):
        model_file = tmp_path / "model.py"
        model_file.write_text(source)
        out_path = tmp_path / "wire.bin"
        write_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        read_fd, unused_w = os.pipe()
        os.close(unused_w)
        try:
            request = {"type": "extract", "model_file": str(model_file), "model_name": None,
                       "input": {"kind": "shape", "shapes": [[2, 4]], "dtype": "float32"}, "seed": 0,
                       "device": "cpu", "save": "all"}
            request.update(fields)
            rc = extract(Wire(read_fd, write_fd), request)
        finally:
            os.close(write_fd)
            os.close(read_fd)
        return [h for h, _ in parse_frames(out_path.read_bytes())], rc

    yield run
    sys.path[:] = saved_path
    if saved_user is None:
        sys.modules.pop("torchlens_user_model", None)
    else:
        sys.modules["torchlens_user_model"] = saved_user


RAISING_MODEL = """
import torch
from torch import nn

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.relu(self.l(x))
        raise RuntimeError("the user's forward failed")

model = M()
"""


def test_extract_restores_torch_when_the_forward_pass_raises(run_extract):
    before = snapshot()
    headers, rc = run_extract(RAISING_MODEL)
    assert rc != 0
    assert headers[-1]["type"] == "error" and headers[-1]["phase"] == "capture"
    assert_torch_untouched(before)


def test_extract_restores_torch_when_the_model_file_fails_to_import(run_extract):
    before = snapshot()
    headers, rc = run_extract("import torch\nraise ImportError('no such thing')\n")
    assert rc != 0
    assert headers[-1]["type"] == "error" and headers[-1]["phase"] == "load"
    assert_torch_untouched(before)


JIT_MODEL = """
import torch
import torch.nn.functional as F
from torch import nn

@torch.jit.script
def fused_act(x):
    return F.relu(x) * torch.tanh(x)

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return fused_act(self.l(x))

model = M()
"""


def _scripted_without_agent(x):
    return F.relu(x) * torch.tanh(x)


def test_model_file_using_torch_jit_script_at_import_loads_and_runs(run_extract):
    try:
        torch.jit.script(_scripted_without_agent)  # pyright: ignore[reportPrivateImportUsage]
    except Exception as exc:  # a torch without a working TorchScript: nothing to compare against
        pytest.skip(f"torch.jit.script does not work here even without the agent: {exc}")
    before = snapshot()
    headers, rc = run_extract(JIT_MODEL)
    assert_torch_untouched(before)
    errors = [h for h in headers if h["type"] == "error"]
    assert not errors, errors[0]["message"]
    assert rc == 0 and headers[-1]["type"] == "done"


def _tensor_of_scalars():
    return torch.tensor([torch.tensor(1.5), torch.tensor(2.5)])


def test_tensors_stay_non_sequences_while_wrapped_and_after_restore():
    # Wrapping Tensor.__getitem__ in Python fills the type's sequence slot; torch.tensor of a list
    # of 0-d tensors then calls len() on them and raises "len() of a 0-d tensor".
    wrappers = Wrappers()
    wrappers.install()
    try:
        assert _tensor_of_scalars().tolist() == [1.5, 2.5]
        assert torch.arange(6).view(2, 3)[1, 2].item() == 5  # indexing still goes through the wrapper
    finally:
        wrappers.restore()
    assert _tensor_of_scalars().tolist() == [1.5, 2.5]


def test_restore_puts_back_script_function_call():
    script_function = getattr(torch._C, "ScriptFunction", None)
    if script_function is None:
        pytest.skip("no torch._C.ScriptFunction in this torch")
    before = vars(script_function)["__call__"]
    wrappers = Wrappers()
    wrappers.install()
    assert vars(script_function)["__call__"] is not before
    wrappers.restore()
    assert vars(script_function)["__call__"] is before


WEIGHT_NORM_MODEL = """
import torch
from torch import nn

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.utils.weight_norm(nn.Linear(4, 3))

    def forward(self, x):
        return self.l(x)

model = M()
"""


def test_weight_norm_weight_is_an_op_of_weight_g_and_weight_v_not_a_constant(run_extract):
    weight_norm_module = sys.modules["torch.nn.utils.weight_norm"]
    private_before = weight_norm_module._weight_norm
    headers, rc = run_extract(WEIGHT_NORM_MODEL)
    assert rc == 0, [h for h in headers if h["type"] == "error"]
    ops = [h for h in headers if h["type"] == "pass"]
    assert not [h for h in ops if h["kind"] == "constant"]
    (norm,) = [h for h in ops if h["func"] == "_weight_norm"]
    assert set(norm["params"]) == {"l.weight_g", "l.weight_v"}
    (linear,) = [h for h in ops if h["func"] == "linear"]
    assert [norm["id"], "1"] in linear["parents"]
    assert weight_norm_module._weight_norm is private_before  # the library's name is put back
