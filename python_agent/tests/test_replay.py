"""Pieces of validation by replay (validation/) that the CLI's validate tests reach only through
whole models: the exemption lookups and the crash-proof replay of extension kernels."""

import os

import pytest

from torchlens_agent.validation.exemptions import exemption, remainder_by_one
from torchlens_agent.validation.isolation import foreign, isolated


@pytest.mark.parametrize("inplace, plain", [("__ior__", "__or__"), ("clamp_", "clamp"), ("masked_fill_", "masked_fill")])
def test_an_in_place_op_gets_the_may_ignore_exemption_of_its_out_of_place_twin(inplace, plain):
    assert exemption(plain, "1", False) == "may-ignore"
    assert exemption(inplace, "1", False) == "may-ignore"


def test_an_op_that_changed_is_never_exempt_by_may_ignore():
    assert exemption("__ior__", "1", True) is None


def test_ops_outside_torch_itself_are_the_foreign_ones():
    assert foreign({"qualname": "torch.ops.torchvision.roi_align"})
    assert not foreign({"qualname": "torch.ops.aten.add"})
    assert not foreign({"qualname": "torch.nn.functional.relu"})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_an_isolated_replay_that_crashes_counts_as_changed_and_the_agent_lives_on():
    def crash() -> bool:
        os.kill(os.getpid(), 11)  # what an out-of-bounds read in a kernel does
        return False

    assert isolated(crash) is True
    assert isolated(lambda: False) is False
    assert isolated(lambda: True) is True


def test_an_integer_remainder_by_one_exempts_only_its_dividend():
    rule = remainder_by_one
    assert rule({"func": "__mod__", "args": {"1": 1}}, "0") == "remainder-by-one"
    assert rule({"func": "remainder", "args": {"k:other": -1}}, "0") == "remainder-by-one"
    assert rule({"func": "__mod__", "args": {"1": 7}}, "0") is None
    assert rule({"func": "__mod__", "args": {"1": True}}, "0") is None
    assert rule({"func": "__mod__", "args": {"1": 1}}, "1") is None
    assert rule({"func": "add", "args": {"1": 1}}, "0") is None


def test_matching_infinities_pass_without_a_numpy_warning_and_an_infinity_on_one_side_fails():
    import warnings

    import numpy as np

    from torchlens_agent.validation.compare import compare

    masked = np.array([0.5, -np.inf, np.inf, np.nan], dtype=np.float32)  # an attention mask's -inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would reach the user's terminal
        verdict = compare(masked.copy(), masked, "float32")
    assert verdict["ok"] is True
    for got, want in ((-np.inf, np.inf), (5.0, np.inf), (np.inf, 5.0), (5.0, -np.inf)):
        verdict = compare(np.array([got], np.float32), np.array([want], np.float32), "float32")
        assert verdict["ok"] is False, (got, want)
