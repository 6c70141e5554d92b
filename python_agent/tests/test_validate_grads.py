"""Validation of a run's gradients (docs/gradients.md, "Validation"; validation/grads.py), driven
through real agent processes: an extract request with `grads`, its arrays and gradients written to
npz files the way the CLI writes them, then a validate request carrying the gradients (as
src/validate/plan.ts builds it). Good runs pass; a run with one gradient altered fails, naming
that pass; a pass whose child's gradient was not recorded is exempt."""

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch

from agent_testlib import AgentRun, extract_request, output_ids, start_agent
from torchlens_agent.validation.grads import input_leaves

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "fixtures")


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, f"{name}.py")


class Extracted:
    """One extract with gradients: its records, and each pass's activation and gradient bytes
    (data frames follow their `pass` or `grad` frame, with the same id)."""

    def __init__(self, run: AgentRun):
        self.run = run
        self.records: List[Dict[str, Any]] = []
        self.grad_frames: Dict[int, Dict[str, Any]] = {}
        act: Dict[int, bytearray] = {}
        grad: Dict[int, bytearray] = {}
        into: Optional[bytearray] = None
        for header, payload in run.frames:
            kind = header["type"]
            if kind == "pass":
                self.records.append(header)
                into = act.setdefault(header["id"], bytearray())
            elif kind == "grad":
                self.grad_frames[header["id"]] = header
                into = grad.setdefault(header["id"], bytearray())
            elif kind == "data":
                assert into is not None
                into.extend(payload)
            else:
                into = None
        self.by_id = {r["id"]: r for r in self.records}
        self.activations = {pid: self._array(bytes(b), self.by_id[pid]) for pid, b in act.items()
                            if self.by_id[pid]["stored_dtype"] is not None}
        self.gradients = {pid: self._array(bytes(b), self.grad_frames[pid]) for pid, b in grad.items()}
        (self.done,) = run.of_type("done")

    @staticmethod
    def _array(data: bytes, header: Dict[str, Any]) -> np.ndarray:
        return np.frombuffer(data, dtype=np.dtype(header["stored_dtype"])).reshape(header["shape"]).copy()

    def label(self, pid: int) -> str:
        return f"p{pid}"

    def output_ids(self) -> List[int]:
        assert self.done is not None
        return output_ids(self.done["outputs"])

    def named(self, func: str) -> List[Dict[str, Any]]:
        return [r for r in self.records if r["func"] == func]


def extract(model_file: str, target: Optional[Dict[str, Any]] = None, params: bool = False,
            save: Any = "all", **fields: Any) -> Extracted:
    request = extract_request(model_file, save=save, grad=True,
                              grads={"target": target or {"kind": "sum"}, "params": params}, **fields)
    run = start_agent(request).wait(timeout=300)
    errors = run.of_type("error")
    assert not errors, f"{errors[0]['phase']}: {errors[0]['exc_type']}: {errors[0]['message']}"
    assert run.rc == 0, run.stderr.decode(errors="replace")[-2000:]
    return Extracted(run)


def write_run(ex: Extracted, tmp_path, change: Optional[Dict[int, np.ndarray]] = None,
              grads: Optional[Dict[int, Any]] = None) -> Tuple[str, str, Dict[int, Any]]:
    """activations.npz and gradients.npz as the CLI writes them, and each pass's `grad` as the log
    records it (null where the pass was not saved, none where the agent sent no gradient);
    `change` replaces saved gradients, `grads` overrides the log's `grad` of some passes."""
    acts = tmp_path / "activations.npz"
    saved: Dict[str, Any] = {ex.label(pid): a for pid, a in ex.activations.items()}
    np.savez(acts, **saved)
    arrays: Dict[str, Any] = {ex.label(pid): a for pid, a in ex.gradients.items() if pid > 0}
    for pid, value in (change or {}).items():
        arrays[ex.label(pid)] = value
    for pid, frame in ex.grad_frames.items():
        if pid < 0:
            arrays[f"param:{frame['param']}"] = ex.gradients[pid]
    grad_file = tmp_path / "gradients.npz"
    np.savez(grad_file, **arrays)
    log_grads: Dict[int, Any] = {}
    for r in ex.records:
        pid = r["id"]
        if r["stored_dtype"] is None:
            log_grads[pid] = None
        elif pid in ex.gradients:
            log_grads[pid] = {"status": "saved", "array": ex.label(pid)}
        else:
            log_grads[pid] = {"status": "none"}
    log_grads.update(grads or {})
    return str(acts), str(grad_file), log_grads


def validate(ex: Extracted, model_file: str, tmp_path, target: Optional[Dict[str, Any]] = None,
             change: Optional[Dict[int, np.ndarray]] = None, grads: Optional[Dict[int, Any]] = None,
             gradients: bool = True, **fields: Any) -> Dict[str, Any]:
    acts, grad_file, log_grads = write_run(ex, tmp_path, change, grads)
    expected = []
    for r in ex.records:
        e = {"id": r["id"], "func": r["func"], "kind": r["kind"], "shape": r["shape"], "dtype": r["dtype"],
             "array": ex.label(r["id"]) if r["stored_dtype"] is not None else None,
             "parents": [pid for pid, _ in r["parents"]]}
        if gradients:
            e["grad"] = log_grads[r["id"]]
        expected.append(e)
    outputs = [{"id": i, "array": ex.label(i) if ex.by_id[i]["stored_dtype"] else None, "dtype": ex.by_id[i]["dtype"]}
               for i in ex.output_ids()]
    params = [{"address": f["param"], "array": f"param:{f['param']}", "dtype": f["dtype"]}
              for pid, f in sorted(ex.grad_frames.items(), reverse=True) if pid < 0]
    request = dict(extract_request(model_file, grad=True, **fields), type="validate", npz=acts, expected=expected,
                   outputs=outputs, check_dependence=True)
    if gradients:
        request["gradients"] = {"file": grad_file, "target": target or {"kind": "sum"}, "params": params}
    check = start_agent(request).wait(timeout=300)
    errors = check.of_type("error")
    assert not errors, f"{errors[0]['phase']}: {errors[0]['exc_type']}: {errors[0]['message']}"
    (done,) = check.of_type("done")
    done["verdicts"] = check.of_type("verdict")
    return done


def failures(done: Dict[str, Any]) -> List[str]:
    g = done["gradients"]
    return [f"{v['id']} [{v['func']}]: {v['reason']}" for v in g["verdicts"] if v["status"] == "failed"] + \
        [f"plain {c['kind']} {c['id'] or c['param']}: {c['reason']}" for c in g["ground_truth"] if not c["ok"]]


def assert_valid(done: Dict[str, Any], ex: Extracted) -> None:
    assert [v for v in done["verdicts"] if v["status"] == "failed"] == []
    assert [g for g in done["ground_truth"] if not g["ok"]] == []
    assert failures(done) == []
    verdicts = done["gradients"]["verdicts"]
    assert [v["id"] for v in verdicts] == [r["id"] for r in ex.records]  # every pass, none left out
    assert done["gradients"]["counts"]["passed"] == len(verdicts)  # nothing exempt in a full run
    inputs = [c for c in done["gradients"]["ground_truth"] if c["kind"] == "input"]
    assert [c["id"] for c in inputs] == [r["id"] for r in ex.records if r["kind"] == "input"]


# -- good runs pass ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["two_loops", "lstm_gru", "branching_mlp", "shared_branches", "noisy"])
def test_a_run_s_gradients_replay_from_its_children_and_match_a_plain_backward_pass(name, tmp_path):
    ex = extract(fixture(name))
    assert ex.gradients, "extract sent no gradients"
    done = validate(ex, fixture(name), tmp_path)
    assert_valid(done, ex)


def test_a_loss_that_reads_the_input_and_the_parameters_gradients_validate(tmp_path):
    target = {"kind": "loss", "function": "loss_fn"}
    ex = extract(fixture("grads_loss"), target=target, params=True)
    assert any(pid < 0 for pid in ex.grad_frames), "no parameter gradients were sent"
    done = validate(ex, fixture("grads_loss"), tmp_path, target=target)
    assert_valid(done, ex)
    params = [c for c in done["gradients"]["ground_truth"] if c["kind"] == "param"]
    assert {c["param"] for c in params} == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight",
                                             "head.bias"}
    assert all(c["ok"] and c["max_abs_err"] is not None for c in params)


def test_one_element_of_an_output_as_the_target_validates(tmp_path):
    target = {"kind": "index", "output": 1, "index": [0, 2]}
    ex = extract(fixture("two_loops"), target=target)
    (out,) = ex.output_ids()
    want = np.zeros(ex.by_id[out]["shape"], np.float32)
    want[0, 2] = 1.0
    assert np.array_equal(ex.gradients[out], want)
    done = validate(ex, fixture("two_loops"), tmp_path, target=target)
    assert_valid(done, ex)


def test_a_run_without_gradients_validates_as_before(tmp_path):
    ex = extract(fixture("two_loops"))
    done = validate(ex, fixture("two_loops"), tmp_path, gradients=False)
    assert "gradients" not in done
    assert [v for v in done["verdicts"] if v["status"] == "failed"] == []


# -- what is wrong is caught, and named ----------------------------------------------------------------

def test_one_altered_gradient_fails_that_pass_and_its_children_s_sums(tmp_path):
    ex = extract(fixture("two_loops"))
    (victim, *_) = ex.named("tanh")
    altered = ex.gradients[victim["id"]] + 0.25
    done = validate(ex, fixture("two_loops"), tmp_path, change={victim["id"]: altered})
    failed = {v["id"]: v for v in done["gradients"]["verdicts"] if v["status"] == "failed"}
    assert victim["id"] in failed
    assert "differs from the saved gradient" in failed[victim["id"]]["reason"]
    # its parent sums the altered gradient's product: that fails too; nothing else does
    (parent,) = [pid for pid, _ in victim["parents"]]
    assert set(failed) == {victim["id"], parent}
    assert [v for v in done["verdicts"] if v["status"] == "failed"] == []  # the activations are fine


def test_an_altered_input_gradient_fails_against_the_plain_backward_pass(tmp_path):
    ex = extract(fixture("branching_mlp"))
    (inp,) = [r["id"] for r in ex.records if r["kind"] == "input"]
    done = validate(ex, fixture("branching_mlp"), tmp_path, change={inp: ex.gradients[inp] * 1.5})
    (plain,) = [c for c in done["gradients"]["ground_truth"] if c["kind"] == "input"]
    assert plain["id"] == inp and not plain["ok"]
    assert [v["id"] for v in done["gradients"]["verdicts"] if v["status"] == "failed"] == [inp]


def test_an_altered_parameter_gradient_fails_against_the_plain_backward_pass(tmp_path):
    target = {"kind": "loss", "function": "loss_fn"}
    ex = extract(fixture("grads_loss"), target=target, params=True)
    (pid, frame), *_ = [(pid, f) for pid, f in ex.grad_frames.items() if pid < 0 and f["param"] == "fc2.weight"]
    ex.gradients[pid] = ex.gradients[pid] * 0.5
    done = validate(ex, fixture("grads_loss"), tmp_path, target=target)
    bad = [c["param"] for c in done["gradients"]["ground_truth"] if not c["ok"]]
    assert bad == [frame["param"]]


def test_a_pass_said_to_have_no_gradient_that_has_one_fails(tmp_path):
    ex = extract(fixture("two_loops"))
    (victim, *_) = ex.named("relu")
    done = validate(ex, fixture("two_loops"), tmp_path, grads={victim["id"]: {"status": "none"}})
    (verdict,) = [v for v in done["gradients"]["verdicts"] if v["id"] == victim["id"]]
    assert verdict["status"] == "failed" and verdict["grad"] == "none"
    assert "the run says the target does not depend on this pass" in verdict["reason"]


def test_a_pass_whose_child_s_gradient_was_not_recorded_is_exempt_and_names_the_child(tmp_path):
    ex = extract(fixture("two_loops"))
    (child, *_) = ex.named("tanh")
    (parent,) = [pid for pid, _ in child["parents"]]
    done = validate(ex, fixture("two_loops"), tmp_path, grads={child["id"]: None})
    verdicts = {v["id"]: v for v in done["gradients"]["verdicts"]}
    assert child["id"] not in verdicts  # not recorded: nothing to check
    assert verdicts[parent]["status"] == "exempt"
    assert f"pass {child['id']}" in verdicts[parent]["reason"] and "--layers" in verdicts[parent]["reason"]
    assert failures(done) == []


def test_a_run_extracted_with_a_selection_validates_with_the_unselected_passes_parents_exempt(tmp_path):
    ex = extract(fixture("two_loops"), save={"words": ["relu"]})  # what --layers relu asks for
    keep = {r["id"] for r in ex.named("relu")}
    assert set(ex.gradients) == keep
    done = validate(ex, fixture("two_loops"), tmp_path)
    verdicts = done["gradients"]["verdicts"]
    assert {v["id"] for v in verdicts} == keep
    assert all(v["status"] == "exempt" and "--layers" in v["reason"] for v in verdicts)
    assert failures(done) == []


# -- views written in place, custom Functions, outputs used again ---------------------------------------

def _view_inplace_truth(ex: Extracted) -> Dict[int, np.ndarray]:
    """The gradients of the sum target of tricky_view_inplace (`y = h[:, 0]; y.add_(1); out = h * 2;
    t = h.t(); t.mul_(3); h[1:] = 0.5; return out + h`) that do not depend on the weights: of the
    column view and its in-place add ([5, 2, 2]: 2 from `h * 2`, 3 more where row 0 is scaled by
    3 and survives `h[1:] = 0.5`), of the transpose view (3 in row 0 of h) and of its in-place mul."""
    col = np.array([5.0, 2.0, 2.0], np.float32)
    row0 = np.zeros((4, 3), np.float32)
    row0[:, 0] = 1.0
    return {ex.named("__getitem__")[0]["id"]: col, ex.named("add_")[0]["id"]: col, ex.named("t")[0]["id"]: 3 * row0,
            ex.named("mul_")[0]["id"]: row0}


def test_views_written_in_place_replay_through_their_view_writes(tmp_path):
    """The replay of `view_write` (the base after a write through a view) against gradients known
    by hand: the write gets the gradient where the view lies, the base before the rest."""
    ex = extract(fixture("tricky_view_inplace"))
    truth = _view_inplace_truth(ex)
    grads = {pid: {"status": "saved", "array": ex.label(pid)} for pid in truth}
    done = validate(ex, fixture("tricky_view_inplace"), tmp_path, change=truth, grads=grads)
    assert_valid(done, ex)


def test_a_fixture_with_views_written_in_place_validates_as_extracted(tmp_path):
    ex = extract(fixture("tricky_view_inplace"))
    done = validate(ex, fixture("tricky_view_inplace"), tmp_path)
    assert_valid(done, ex)


def test_outputs_that_are_also_used_inside_the_model_validate_as_extracted(tmp_path):
    ex = extract(fixture("multi_io"))
    done = validate(ex, fixture("multi_io"), tmp_path)
    assert_valid(done, ex)


def test_the_parents_of_a_custom_autograd_function_s_output_are_exempt(tmp_path):
    ex = extract(fixture("tricky_autograd_function"))
    done = validate(ex, fixture("tricky_autograd_function"), tmp_path)
    exempt = {v["id"]: v["reason"] for v in done["gradients"]["verdicts"] if v["status"] == "exempt"}
    (linear, *_) = ex.named("linear")
    assert "custom autograd.Function" in exempt[linear["id"]]


# -- pieces ---------------------------------------------------------------------------------------------

def test_input_leaves_pairs_each_input_pass_with_the_leaf_made_for_it():
    from torchlens_agent.capture.grads import inputs_requiring_grad

    x, mask, y = torch.randn(2), torch.tensor([1, 0]), torch.randn(3)
    original = ((x, {"mask": mask}), {"y": y})
    args, kwargs, made = inputs_requiring_grad(*original)
    leaves = input_leaves(original, (args, kwargs), made)
    assert len(leaves) == 3
    first, middle, last = leaves
    assert first is made[0] and middle is None and last is made[1]
    assert first is not None and last is not None
    assert torch.equal(first, x) and torch.equal(last, y)
