"""What torch 2 brought, at the agent's level: output classes in the walker (walk.py), the torch
version helpers and `eager_forward` (compat.py), and capture of torch.compile'd code.

The walker and compat tests run under every torch (output classes are not torch 2's, but models of
the torch 2 era return them); the torch.compile ones are skipped, saying so, where torch has none.
End to end, through the CLI, the same things are in test/torch2.test.ts.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap
from collections import OrderedDict, defaultdict
from typing import Any, NamedTuple, Optional, Tuple

import pytest
import torch
from torch import nn

from agent_testlib import AGENT_ROOT, Fn, capture
from torchlens_agent import compat
from torchlens_agent.walk import dataclass_items, get_at, iter_tensors, map_tensors, map_tensors_at

_compile: Any = getattr(torch, "compile", None)  # torch 2's; 1.13 has none
needs_compile = pytest.mark.skipif(not compat.has_compile(),
                                   reason=f"torch {torch.__version__} has no torch.compile (torch 2 has)")


# -- output classes -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: Tuple[torch.Tensor, ...]
    loss: Optional[torch.Tensor] = None
    kind: str = "classifier"


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: torch.Tensor
    b: Any = None


class State(NamedTuple):
    h: torch.Tensor
    c: torch.Tensor


def _fixture(name: str):
    """A fixtures/NAME.py module, imported by path."""
    import importlib.util

    path = os.path.join(os.path.dirname(AGENT_ROOT), "fixtures", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"torchlens_fixture_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A HuggingFace-style ModelOutput (a dataclass that is an OrderedDict of its set fields): the
# fixture's own classes, so that the test and the end-to-end run walk the same thing.
EncoderOutput = _fixture("torch2_output_modeloutput").EncoderOutput


def _tensors(n: int):
    return [torch.full((2,), float(i)) for i in range(n)]


def test_a_dataclass_is_walked_by_its_fields_in_order_named_by_field():
    a, b, c = _tensors(3)
    out = Output(logits=a, hidden=(b, c))
    assert list(iter_tensors(out)) == [("logits", a), ("hidden.0", b), ("hidden.1", c)]
    assert [p for p, _ in iter_tensors(out, "out")] == ["out.logits", "out.hidden.0", "out.hidden.1"]
    assert dataclass_items(out) == [("logits", a), ("hidden", (b, c)), ("loss", None), ("kind", "classifier")]


def test_a_dataclass_inside_a_list_or_a_dict_is_walked_too():
    a, b, c = _tensors(3)
    value = [a, Frozen(a=b), {"x": Output(logits=c, hidden=())}]
    assert [p for p, _ in iter_tensors(value)] == ["0", "1.a", "2.x.logits"]


def test_a_dataclass_class_itself_and_other_objects_hold_no_tensors():
    assert list(iter_tensors([Output, object(), 3, "s"])) == []
    assert dataclass_items(Output) is None


def test_a_namedtuple_keeps_positional_paths():
    a, b = _tensors(2)
    assert [p for p, _ in iter_tensors((State(a, b), a))] == ["0.0", "0.1", "1"]


def test_a_dict_dataclass_is_walked_as_the_dict_of_its_set_fields():
    a, b, c = _tensors(3)
    out = EncoderOutput(last_hidden_state=a, hidden_states=(b, c))
    assert list(out.keys()) == ["last_hidden_state", "hidden_states"]
    assert [p for p, _ in iter_tensors(out)] == ["last_hidden_state", "hidden_states.0", "hidden_states.1"]


def test_get_at_finds_what_iter_tensors_names():
    a, b, c, d = _tensors(4)
    value = ({"out": Output(logits=a, hidden=(b,))}, Frozen(a=c), EncoderOutput(last_hidden_state=d), State(a, b))
    paths = list(iter_tensors(value))
    assert len(paths) == 6
    for path, t in paths:
        assert get_at(value, path) is t


def test_map_tensors_rebuilds_dataclasses_keeping_their_class_and_other_fields():
    a, b, c = _tensors(3)
    out = map_tensors(Output(logits=a, hidden=(b, c)), lambda t: t + 1)
    assert type(out) is Output and out.kind == "classifier" and out.loss is None
    assert torch.equal(out.logits, a + 1) and torch.equal(out.hidden[1], c + 1)
    frozen = map_tensors(Frozen(a=a, b="keep"), lambda t: t * 0)
    assert type(frozen) is Frozen and frozen.b == "keep" and torch.equal(frozen.a, torch.zeros(2))


def test_map_tensors_keeps_dict_subclasses_whole():
    a, b = _tensors(2)
    enc = map_tensors(EncoderOutput(last_hidden_state=a, hidden_states=(b,)), lambda t: t + 1)
    assert type(enc) is EncoderOutput and list(enc.keys()) == ["last_hidden_state", "hidden_states"]
    assert enc.last_hidden_state is not None and torch.equal(enc.last_hidden_state, a + 1)
    assert torch.equal(enc["last_hidden_state"], a + 1)
    lists = defaultdict(list, {"x": a})
    mapped = map_tensors(lists, lambda t: t * 2)
    assert type(mapped) is defaultdict and mapped.default_factory is list and torch.equal(mapped["x"], a * 2)
    assert type(map_tensors(OrderedDict(x=a), lambda t: t)) is OrderedDict


def test_map_tensors_at_gives_the_paths_iter_tensors_gives():
    a, b = _tensors(2)
    value = [Output(logits=a, hidden=(b,)), {"e": EncoderOutput(last_hidden_state=b)}]
    seen = []
    map_tensors_at(value, lambda path, t: seen.append(path) or t)
    assert seen == [p for p, _ in iter_tensors(value)] == ["0.logits", "0.hidden.0", "1.e.last_hidden_state"]


def test_a_dataclass_output_gets_one_output_pass_per_tensor_field(device):
    """The `done` frame's output structure reaches into a dataclass the model returns, in the order
    the walker gives (validate compares the plain pass's outputs in that order)."""
    fc = nn.Linear(3, 2).to(device)

    def forward(x):
        h = fc(x)
        return Output(logits=h.relu(), hidden=(h, h.tanh()))

    cap = capture(Fn(forward, fc=fc), torch.randn(2, 3, device=device))
    ids = cap.output_ids()
    assert [cap.by_id[i]["output_path"] for i in ids] == ["out.logits", "out.hidden.0", "out.hidden.1"]
    assert [cap.producer(i)["func"] for i in ids] == ["relu", "linear", "tanh"]


# -- compat ---------------------------------------------------------------------------------------------

def test_torch_version_is_the_running_torchs():
    major, minor = compat.torch_version()
    assert torch.__version__.startswith(f"{major}.{minor}")
    assert compat.has_compile() == callable(getattr(torch, "compile", None))


def test_eager_forward_runs_plain_code_unchanged():
    with compat.eager_forward():
        assert torch.equal(torch.ones(2) * 2, torch.full((2,), 2.0))


@needs_compile
def test_eager_forward_runs_compiled_code_without_compiling_and_compiles_again_after():
    compiled = []

    def counting_backend(gm, example_inputs):  # noqa: ANN001
        compiled.append(gm)
        return gm.forward

    @_compile(backend=counting_backend)
    def f(x):
        return torch.sin(x) + 1

    x = torch.randn(3)
    with compat.eager_forward():
        assert torch.allclose(f(x), torch.sin(x) + 1)
    assert compiled == []
    f(x)
    assert len(compiled) == 1
    # what was compiled before does not run either: torch.sin looked up now, as eager code does
    seen = []
    original = torch.sin

    def spy(t):
        seen.append(t)
        return original(t)

    with compat.eager_forward():
        torch.sin = spy
        try:
            f(x)
        finally:
            torch.sin = original
    assert len(seen) == 1


@needs_compile
def test_eager_forward_keeps_a_torch_dynamo_first_imported_inside_from_compiling_until_it_ends():
    """torch.compile called inside the forward pass, before anything imported torch._dynamo (in a
    fresh interpreter, as the agent is): nothing compiles inside; after, torch compiles again."""
    code = textwrap.dedent("""
        import os, sys, torch
        from torchlens_agent import compat
        assert "torch._dynamo" not in sys.modules
        compiled = []
        def backend(gm, example_inputs):
            compiled.append(gm)
            return gm.forward
        with compat.eager_forward():
            f = torch.compile(lambda t: t.sin() + 1, backend=backend)
            assert torch.allclose(f(torch.ones(2)), torch.ones(2).sin() + 1)
        assert "torch._dynamo" in sys.modules and compiled == []
        assert "TORCH_COMPILE_DISABLE" not in os.environ and not torch._dynamo.config.disable
        g = torch.compile(lambda t: t.cos() + 1, backend=backend)
        g(torch.ones(2))
        assert len(compiled) == 1
    """)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_COMPILE_DISABLE"}
    env["PYTHONPATH"] = AGENT_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@needs_compile
def test_a_compiled_submodules_ops_are_each_recorded(device):
    block = _compile(nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)), backend="eager").to(device)
    cap = capture(Fn(lambda x: block(x).sigmoid(), block=block), torch.randn(3, 4, device=device))
    assert cap.funcs() == ["linear", "gelu", "linear", "sigmoid"]
    assert cap.one("gelu")["modules"][-1][0] == "block._orig_mod.1"
