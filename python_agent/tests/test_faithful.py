"""Faithful capture in process: references taken by value are rebound and put back, tensors an op
writes to are recorded before it runs, and the completeness counter finds the calls no wrapper
saw. The end-to-end cases (validate's verdicts on fixtures/faithful_*.py) are in test/faithful.test.ts.
"""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent_testlib import FrameCollector, Captured
from torchlens_agent.capture.install import Wrappers
from torchlens_agent.capture.ops import NOT_OPS, writes_arguments
from torchlens_agent.capture.run import run_captured
from torchlens_agent.capture.session import CaptureSession
from torchlens_agent.validation import completeness
from torchlens_agent.validation.perturb import more_perturbations, perturbed

REGISTRY = {"gelu": F.gelu}


def _default_act(x, act=torch.sigmoid):
    return act(x)


class Held(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = F.gelu
        self.clamp = functools.partial(torch.clamp, min=0.0)

    def forward(self, x):
        return self.clamp(_default_act(REGISTRY["gelu"](self.act(x))))


def _capture_rebound(model: nn.Module, *args) -> Captured:
    import sys

    wrappers = Wrappers()
    wire = FrameCollector()
    wrappers.install()
    try:
        wrappers.rebind_references(model, [sys.modules[__name__]])
        session = CaptureSession(wire, model)
        out, _ = run_captured(wrappers, session, model, args, {})
        outputs = session.add_outputs(out)
    finally:
        wrappers.restore()
    return Captured(wire, session, outputs, out)


def test_functions_held_in_attributes_registries_defaults_and_partials_are_recorded():
    model = Held()
    got = _capture_rebound(model, torch.randn(2, 3))
    assert got.funcs() == ["gelu", "gelu", "sigmoid", "clamp"]
    assert got.of_kind("constant") == []


def test_restore_puts_every_rebound_reference_back():
    model = Held()
    _capture_rebound(model, torch.randn(2, 3))
    assert model.act is F.gelu and getattr(F.gelu, "_tl_wrapper", False) is False
    assert REGISTRY["gelu"] is F.gelu
    assert _default_act.__defaults__ == (torch.sigmoid,)
    assert model.clamp.func is torch.clamp


def test_a_buffer_an_op_writes_to_is_saved_with_the_value_it_read():
    bn = nn.BatchNorm1d(3).train()
    wrappers = Wrappers()
    wire = FrameCollector()
    wrappers.install()
    try:
        session = CaptureSession(wire, bn)
        run_captured(wrappers, session, bn, (torch.randn(4, 3),), {})
    finally:
        wrappers.restore()
    got = Captured(wire, session, {}, None)
    counter = next(r for r in got.of_kind("buffer") if r["address"] == "num_batches_tracked")
    mean = next(r for r in got.of_kind("buffer") if r["address"] == "running_mean")
    assert got.array(counter["id"]).tolist() == 0  # the value add_ read
    assert got.array(mean["id"]).tolist() == [0.0, 0.0, 0.0]
    assert bn.state_dict()["num_batches_tracked"].tolist() == 1  # the op itself still ran


def test_ops_that_write_their_arguments_are_known_by_name():
    assert writes_arguments("add_") and writes_arguments("__setitem__") and writes_arguments("batch_norm")
    assert not writes_arguments("add") and not writes_arguments("__add__")


def test_the_completeness_counter_names_a_call_no_wrapper_saw():
    if not completeness.available():
        pytest.skip("this torch has no TorchFunctionMode")
    hidden = F.gelu.__call__  # a slot wrapper: rebinding cannot reach the function inside

    class Net(nn.Module):
        def forward(self, x):
            return torch.tanh(hidden(x))

    model = Net()
    wrappers = Wrappers()
    wrappers.install()
    counter = completeness.CallCounter(NOT_OPS, wrappers.switch)
    try:
        with counter:
            run_captured(wrappers, completeness.ProbeSession(model), model, (torch.randn(2),), {})
    finally:
        wrappers.restore()
    assert [(name, n) for (name, _), n in counter.unseen.items()] == [("gelu", 1)]
    assert "test_faithful.py" in next(iter(counter.unseen))[1]
    assert counter.counts == {"gelu": 1, "tanh": 1}


def test_the_plain_counter_counts_tensor_calls_and_not_metadata():
    if not completeness.available():
        pytest.skip("this torch has no TorchFunctionMode")
    counter = completeness.CallCounter(NOT_OPS)
    x = torch.randn(2, 3)
    with counter:
        _ = x.shape, x.size(0), x.dim()
        y = torch.relu(x) + 1
        y[0] = 0.0
    assert counter.counts == {"relu": 1, "add": 1, "__setitem__": 1}  # torch hands `x + 1` over as Tensor.add


def test_perturbing_an_all_nan_parent_gives_finite_values():
    gen = torch.Generator().manual_seed(0)
    t = torch.full((5,), float("nan"))
    moved = perturbed(t, gen)
    assert moved is not None and bool(torch.isfinite(moved).all())
    moved_inf = perturbed(torch.tensor([float("inf"), 1.0]), gen)
    assert moved_inf is not None and bool(torch.isfinite(moved_inf).all())
    more = more_perturbations(torch.tensor([-1.0, -2.0]), gen)
    assert any(bool((m > 0).all()) for m in more)  # positive values: log of them is finite
    assert np.isfinite(torch.log(more[1]).numpy()).all()
