"""--grads (docs/gradients.md): the gradients a real agent streams, checked against a plain forward
and backward pass of the same model run without torchlens: the inputs' and the parameters'
gradients, and the gradient at every module call's output (a plain forward hook registers a
tensor hook there), on fixtures for each mechanism (recurrence, branches, shared modules, in-place
writes, noise) and on zoo models.

    python3 -m pytest python_agent -k grads [--device cuda]
"""

import importlib.util
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch

from agent_testlib import AgentRun, extract_request, start_agent
from torchlens_agent.load import example_inputs, find_model, import_model_file, seed_everything, to_device
from torchlens_agent.walk import iter_tensors, map_tensors, tensors_in_order

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "fixtures")
ZOO = os.path.join(ROOT, "zoo", "models.py")


def _grad_run(model_file: str, device, target: Optional[Dict[str, Any]] = None, params: bool = True,
              **fields: Any) -> AgentRun:
    grads = {"target": target or {"kind": "sum"}, "params": params}
    run = start_agent(extract_request(model_file, device=str(device), grad=True, grads=grads, **fields)).wait(timeout=600)
    errors = run.of_type("error")
    assert not errors, f"{errors[0]['phase']}: {errors[0]['exc_type']}: {errors[0]['message']}"
    assert run.rc == 0, run.stderr.decode(errors="replace")[-2000:]
    return run


def _grads_of(run: AgentRun) -> Dict[int, np.ndarray]:
    """id -> gradient array, from the `grad` frames and the data frames that follow each."""
    out: Dict[int, np.ndarray] = {}
    current: Optional[Dict[str, Any]] = None
    pieces: List[bytes] = []

    def finish() -> None:
        assert current is not None
        data = b"".join(pieces)
        assert len(data) == current["stored_nbytes"], f"gradient {current['id']}: {len(data)} bytes arrived"
        out[current["id"]] = np.frombuffer(data, dtype=np.dtype(current["stored_dtype"])).reshape(current["shape"])

    for header, payload in run.frames:
        if header["type"] == "data" and current is not None:
            assert header["id"] == current["id"], "a gradient's bytes came out of order"
            pieces.append(payload)
            continue
        if current is not None:
            finish()
            current = None
        if header["type"] == "grad":
            assert header["id"] not in out, f"two gradients for id {header['id']}"
            current, pieces = header, []
    if current is not None:
        finish()
    return out


class Plain:
    """The model run without torchlens, as the agent runs it (same seed order, same inputs), with
    autograd: the gradients of the inputs, the parameters and every module call's outputs.

    A module output's gradient is read at the autograd node that made it: a tensor hook would not
    do on torch 1.13, where a second hook on a tensor changed in place since its first (a shared
    in-place ReLU's output, hooked as batch norm's output before) fires at the first one's node."""

    def _watch(self, t: torch.Tensor, key: Tuple[str, int, int]) -> None:
        def keep(g: Optional[torch.Tensor]) -> None:
            if g is not None:
                self.module_grads[key] = g.detach().clone()

        node, index = t.grad_fn, t.output_nr
        if node is None:
            t.register_hook(lambda g: keep(g))
        else:
            node.register_prehook(lambda grads: keep(grads[index]))

    def __init__(self, model_file: str, device, loss: Optional[str] = None) -> None:
        seed_everything(0)
        module = import_model_file(model_file)
        model = find_model(module, None).to(device)
        args, kwargs = example_inputs(module)
        args, kwargs = to_device(args, device), to_device(kwargs, device)
        self.leaves: List[torch.Tensor] = []

        def lift(t: torch.Tensor) -> torch.Tensor:
            if not (t.is_floating_point() or t.is_complex()) or t.requires_grad:
                return t
            leaf = t.detach().requires_grad_(True)
            self.leaves.append(leaf)
            return leaf.clone()

        args, kwargs = map_tensors((args, kwargs), lift)
        self.module_grads: Dict[Tuple[str, int, int], torch.Tensor] = {}
        calls: Dict[str, int] = {}
        handles = []
        for address, mod in model.named_modules():
            def hook(mod, inputs, out, address=address):
                n = calls[address] = calls.get(address, 0) + 1
                for k, (_, t) in enumerate(iter_tensors(out)):
                    if t.requires_grad:
                        self._watch(t, (address, n, k))
            handles.append(mod.register_forward_hook(hook))
        seed_everything(0)
        with torch.enable_grad():
            out = model(*args, **kwargs)
        for h in handles:
            h.remove()
        if loss:
            target = getattr(module, loss)(out, *args, **kwargs)
        else:
            parts = [o.sum() for o in tensors_in_order(out) if o.is_floating_point() and o.requires_grad]
            target = parts[0]
            for p in parts[1:]:
                target = target + p
        for p in model.parameters():
            p.grad = None
        torch.autograd.backward(target)
        self.params = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _close(got: np.ndarray, want: torch.Tensor, what: str) -> None:
    want_np = want.detach().cpu().float().numpy() if want.dtype == torch.bfloat16 else want.detach().cpu().numpy()
    assert got.shape == want_np.shape, f"{what}: shape {got.shape}, plain pass {want_np.shape}"
    scale = max(float(np.abs(want_np).max()) if want_np.size else 0.0, 1e-6)
    err = float(np.abs(got - want_np).max()) if got.size else 0.0
    assert err <= 1e-4 * scale + 1e-6, f"{what}: max abs error {err} against the plain pass's gradient (scale {scale})"


def _check_against_plain(run: AgentRun, plain: Plain) -> int:
    """Every gradient the plain pass has for an input, a parameter or a module output is the one
    the run saved for that pass; returns how many were compared."""
    grads = _grads_of(run)
    records = run.of_type("pass")
    compared = 0
    inputs = [r for r in records if r["kind"] == "input"]
    floating_inputs = [r for r in inputs if r["dtype"].startswith(("float", "bfloat", "complex"))]
    assert len(floating_inputs) == len(plain.leaves)
    for rec, leaf in zip(floating_inputs, plain.leaves):
        if leaf.grad is None:
            assert rec["id"] not in grads, f"input {rec['id']} has a gradient the plain pass does not"
            continue
        _close(grads[rec["id"]], leaf.grad, f"input pass {rec['id']}")
        compared += 1
    by_param = {g["param"]: g["id"] for g in run.of_type("grad") if "param" in g}
    assert set(by_param) == set(plain.params), "the parameters with a gradient differ from the plain pass's"
    for name, want in plain.params.items():
        _close(grads[by_param[name]], want, f"parameter {name}")
        compared += 1
    for m in run.of_type("module"):
        for k, pid in enumerate(m["outputs"]):
            want = plain.module_grads.get((m["address"], m["call"], k))
            if want is None:
                continue  # the target does not depend on it (or it is not a differentiable tensor)
            assert pid in grads, f"module {m['address']!r} call {m['call']} output {k} (pass {pid}) got no gradient"
            _close(grads[pid], want, f"module {m['address']!r} call {m['call']} output {k} (pass {pid})")
            compared += 1
    return compared


MECHANISMS = ["lstm_gru", "two_loops", "branching_mlp", "shared_branches", "tricky_view_inplace", "noisy",
              "nested_loops", "transformer"]


@pytest.mark.parametrize("name", MECHANISMS)
def test_gradients_match_a_plain_backward_at_inputs_parameters_and_module_outputs(name, device):
    model_file = os.path.join(FIXTURES, f"{name}.py")
    run = _grad_run(model_file, device)
    compared = _check_against_plain(run, Plain(model_file, device))
    assert compared > 3


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("zoo_name", ["resnet18", "mobilenet_v3_small", "vit_b_16"])
def test_zoo_model_gradients_match_a_plain_backward(zoo_name, device, monkeypatch):
    if not _has("torchvision"):
        pytest.skip("torchvision is not installed")
    monkeypatch.setenv("TORCHLENS_ZOO_MODEL", zoo_name)
    run = _grad_run(ZOO, device)
    compared = _check_against_plain(run, Plain(ZOO, device))
    assert compared > 20


def test_a_pass_the_target_does_not_depend_on_gets_no_gradient_frame(tmp_path, device):
    model_file = tmp_path / "side.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.a = nn.Linear(4, 4)\n        self.b = nn.Linear(4, 4)\n"
        "    def forward(self, x):\n"
        "        unused = self.b(x).relu()\n"  # computed, never reaching the output
        "        idx = x.argmax(dim=1)\n"  # integer: no gradient
        "        return self.a(x) * 2 + idx.unsqueeze(1).float()\n"
        "def build_model():\n    return M()\n"
        "def example_input():\n    return torch.randn(2, 4)\n")
    run = _grad_run(str(model_file), device, params=False)
    grads = _grads_of(run)
    by_func = {}
    for r in run.of_type("pass"):
        by_func.setdefault(r["func"], []).append(r["id"])
    assert not {pid for f in ("relu", "argmax") for pid in by_func[f]} & set(grads)
    assert by_func["linear"][0] in grads or by_func["linear"][1] in grads
    (linear_a,) = [pid for pid in by_func["linear"] if pid in grads]
    np.testing.assert_allclose(grads[linear_a], np.full((2, 4), 2.0, dtype=np.float32))


def test_an_in_place_change_keeps_each_version_its_own_gradient(tmp_path, device):
    model_file = tmp_path / "inplace.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n"
        "class M(nn.Module):\n"
        "    def forward(self, x):\n"
        "        y = x * 1.0\n"
        "        y.mul_(3.0)\n"  # the pass before it has gradient 3 * w, the one after w
        "        return y * torch.arange(1.0, 4.0)\n"
        "def build_model():\n    return M()\n"
        "def example_input():\n    return torch.ones(3)\n")
    run = _grad_run(str(model_file), device, params=False)
    grads = _grads_of(run)
    first_mul, mul_, last_mul = [r["id"] for r in run.of_type("pass") if r["kind"] == "op"]
    np.testing.assert_allclose(grads[first_mul], [3.0, 6.0, 9.0])
    np.testing.assert_allclose(grads[mul_], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(grads[last_mul], [1.0, 1.0, 1.0])
    (inp,) = [r["id"] for r in run.of_type("pass") if r["kind"] == "input"]
    np.testing.assert_allclose(grads[inp], [3.0, 6.0, 9.0])


def test_an_indexed_target_takes_the_gradient_of_one_output_element(device):
    model_file = os.path.join(FIXTURES, "branching_mlp.py")
    run = _grad_run(model_file, device, target={"kind": "index", "output": 1, "index": [1, 2]}, params=False)
    grads = _grads_of(run)
    (out_id,) = [r["id"] for r in run.of_type("pass") if r["kind"] == "output"]
    want = np.zeros(grads[out_id].shape, dtype=np.float32)
    want[1, 2] = 1.0
    np.testing.assert_array_equal(grads[out_id], want)
    (done,) = run.of_type("done")
    assert done["target_value"] == pytest.approx(float(run_output(run, out_id)[1, 2]), rel=1e-6)


def run_output(run: AgentRun, pid: int) -> np.ndarray:
    """A saved pass's activation: its first stored_nbytes bytes (its gradient's follow, same id)."""
    rec = {r["id"]: r for r in run.of_type("pass")}[pid]
    data = run.payload(pid)[:rec["stored_nbytes"]]
    return np.frombuffer(data, dtype=np.dtype(rec["stored_dtype"])).reshape(rec["shape"])


@pytest.mark.parametrize("target, words", [
    ({"kind": "index", "output": 3, "index": [0]}, "output_3, but the model returned 1"),
    ({"kind": "index", "output": 1, "index": [0]}, "one number"),
    ({"kind": "index", "output": 1, "index": [0, 9]}, "out of range"),
    ({"kind": "loss", "function": "nope"}, "defines no function 'nope'"),
])
def test_a_bad_target_is_an_error_naming_it(target, words, device):
    model_file = os.path.join(FIXTURES, "branching_mlp.py")
    grads = {"target": target, "params": False}
    run = start_agent(extract_request(model_file, device=str(device), grad=True, grads=grads)).wait(timeout=300)
    (error,) = run.of_type("error")
    assert error["phase"] == "grads" and words in error["message"], error
    assert not run.of_type("done")


def test_a_model_without_a_differentiable_output_is_an_error(tmp_path, device):
    model_file = tmp_path / "ints.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n"
        "class M(nn.Module):\n    def forward(self, x):\n        return x.argmax(dim=1)\n"
        "def build_model():\n    return M()\n"
        "def example_input():\n    return torch.randn(2, 4)\n")
    run = start_agent(extract_request(str(model_file), device=str(device), grad=True,
                                      grads={"target": {"kind": "sum"}, "params": False})).wait(timeout=300)
    (error,) = run.of_type("error")
    assert error["phase"] == "grads" and "no differentiable output" in error["message"]
