"""Loading: input files (.pt tensor / tuple / {"args", "kwargs"}, .npy, neither), random inputs, the
model file and the model in it (docs: --model NAME, then build_model(), then model)."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from torchlens_agent.errors import UserError
from torchlens_agent.load import (example_inputs, find_model, import_model_file, load_input_file,
                                  random_inputs, resolve_device, split_args, to_device)


@pytest.fixture
def user_file(tmp_path):
    """Write a model file and import it as the agent does; undo the import afterwards."""
    saved_path = list(sys.path)
    saved_user = sys.modules.get("torchlens_user_model")

    def load(source: str, name: str = "model.py"):
        path = tmp_path / name
        path.write_text(source)
        return import_model_file(str(path))

    yield load
    sys.path[:] = saved_path
    if saved_user is None:
        sys.modules.pop("torchlens_user_model", None)
    else:
        sys.modules["torchlens_user_model"] = saved_user


# -- input files -----------------------------------------------------------------------------------

def test_pt_tensor_is_one_positional_argument(tmp_path):
    t = torch.randn(2, 3)
    torch.save(t, tmp_path / "x.pt")
    args, kwargs = split_args(load_input_file(str(tmp_path / "x.pt")))
    assert len(args) == 1 and kwargs == {}
    assert torch.equal(args[0], t)


def test_pt_tuple_and_list_are_positional_arguments(tmp_path):
    a, b = torch.randn(2), torch.arange(3)
    torch.save((a, b), tmp_path / "t.pt")
    torch.save([a, b], tmp_path / "l.pt")
    for name in ("t.pt", "l.pt"):
        args, kwargs = split_args(load_input_file(str(tmp_path / name)))
        assert len(args) == 2 and kwargs == {}
        assert torch.equal(args[0], a) and torch.equal(args[1], b)


def test_pt_args_kwargs_dict_is_explicit(tmp_path):
    a, m = torch.randn(2), torch.ones(2, dtype=torch.bool)
    torch.save({"args": [a], "kwargs": {"mask": m}}, tmp_path / "d.pt")
    args, kwargs = split_args(load_input_file(str(tmp_path / "d.pt")))
    assert len(args) == 1 and torch.equal(args[0], a)
    assert list(kwargs) == ["mask"] and torch.equal(kwargs["mask"], m)
    torch.save({"args": [a]}, tmp_path / "only_args.pt")
    args, kwargs = split_args(load_input_file(str(tmp_path / "only_args.pt")))
    assert len(args) == 1 and kwargs == {}


def test_other_dicts_are_one_positional_argument():
    d = {"x": torch.ones(1)}
    args, kwargs = split_args(d)
    assert args == (d,) and kwargs == {}


def test_malformed_args_kwargs_dict_is_a_user_error():
    with pytest.raises(UserError) as err:
        split_args({"args": torch.ones(1), "kwargs": {}})
    assert err.value.phase == "input" and err.value.hint


def test_npy_file_loads_as_a_tensor_with_its_dtype(tmp_path):
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(tmp_path / "x.npy", arr)
    t = load_input_file(str(tmp_path / "x.npy"))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert np.array_equal(t.numpy(), arr)


def test_npy_file_with_python_objects_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError) as err:
        load_input_file(str(tmp_path / "obj.npy"))
    assert err.value.phase == "input" and err.value.hint


def test_a_missing_input_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        load_input_file(str(tmp_path / "nope.pt"))
    assert err.value.phase == "input" and "nope.pt" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02 not a torch file", b"PK\x03\x04 broken zip"])
def test_a_file_that_is_neither_npy_nor_torch_is_a_user_error(tmp_path, content):
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_input_file(str(path))
    assert err.value.phase == "input"
    assert err.value.hint


@pytest.mark.parametrize("name,content", [("input.csv", b"x,y\n1,2\n"), ("input.json", b'{"x": [1, 2]}')])
def test_a_text_file_given_as_input_is_not_blamed_on_the_safe_loader(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_input_file(str(path))
    assert str(path) in str(err.value), "the message does not name the file"
    assert "allow-pickle" not in (err.value.hint or ""), err.value.hint


# -- random and example inputs ---------------------------------------------------------------------

def test_random_inputs_are_deterministic_for_a_seed():
    args1, kw1 = random_inputs([[2, 3], [4]], "float32", 7)
    args2, _ = random_inputs([[2, 3], [4]], "float32", 7)
    args3, _ = random_inputs([[2, 3], [4]], "float32", 8)
    assert kw1 == {}
    assert [list(a.shape) for a in args1] == [[2, 3], [4]]
    assert all(a.dtype == torch.float32 for a in args1)
    assert all(torch.equal(a, b) for a, b in zip(args1, args2))
    assert not torch.equal(args1[0], args3[0])


def test_random_inputs_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    random_inputs([[5]], "float32", 0)
    assert torch.equal(torch.rand(3), want)


def test_random_inputs_honour_integer_and_half_dtypes():
    (i,), _ = random_inputs([[10]], "int64", 0)
    (h,), _ = random_inputs([[10]], "bfloat16", 0)
    assert i.dtype == torch.int64 and h.dtype == torch.bfloat16
    with pytest.raises(UserError) as err:
        random_inputs([[1]], "float33", 0)
    assert err.value.phase == "input"


def test_example_input_comes_from_the_model_file(user_file):
    module = user_file("import torch\ndef example_input():\n    return (torch.ones(2), torch.zeros(3))\n")
    args, kwargs = example_inputs(module)
    assert [list(a.shape) for a in args] == [[2], [3]] and kwargs == {}
    bare = user_file("x = 1\n", name="bare.py")
    with pytest.raises(UserError) as err:
        example_inputs(bare)
    assert err.value.phase == "input" and "example_input" in str(err.value)


def test_inputs_move_to_the_device_inside_containers(device):
    moved = to_device(({"a": torch.ones(1)}, [torch.zeros(2)], 3), device)
    assert moved[0]["a"].device.type == device.type and moved[1][0].device.type == device.type
    assert moved[2] == 3


def test_unknown_device_is_a_user_error():
    with pytest.raises(UserError) as err:
        resolve_device("tpu9")
    assert err.value.phase == "input"


def test_cuda_without_a_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError) as err:
        resolve_device("cuda")
    assert err.value.phase == "input" and "cuda" in str(err.value) and err.value.hint


def test_cuda_device_resolves_when_present(cuda_device):
    assert resolve_device(str(cuda_device)).type == "cuda"
    with pytest.raises(UserError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


# -- the model file and the model in it ------------------------------------------------------------

MODELS = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.l = nn.Linear(2, width)

    def forward(self, x):
        return self.l(x)

class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()

def build_model():
    return Net(4)

def make_other():
    return Net(5)

def make_number():
    return 42

def make_sized(width):
    return Net(width)

model = Net(6)
"""


def width(m):
    return m.l.out_features


def test_model_name_wins_over_build_model_and_model(user_file):
    module = user_file(MODELS)
    assert width(find_model(module, "make_other")) == 5
    assert find_model(module, "model") is module.model


def test_build_model_wins_over_model(user_file):
    module = user_file(MODELS)
    assert width(find_model(module, None)) == 4


def test_model_variable_is_the_last_resort(user_file):
    module = user_file(MODELS.replace("def build_model", "def _unused_builder"))
    assert find_model(module, None) is module.model


def test_a_class_is_instantiated(user_file):
    module = user_file(MODELS)
    m = find_model(module, "Net")
    assert isinstance(m, module.Net) and width(m) == 3
    module2 = user_file("from torch import nn\nclass model(nn.Module):\n    def forward(self, x):\n        return x\n",
                        name="cls.py")
    assert isinstance(find_model(module2, None), module2.model)


def test_a_factory_returning_a_non_module_is_a_user_error(user_file):
    module = user_file(MODELS)
    with pytest.raises(UserError) as err:
        find_model(module, "make_number")
    assert err.value.phase == "load" and "make_number" in str(err.value) and "int" in str(err.value)


def test_a_class_that_needs_arguments_is_a_user_error(user_file):
    module = user_file(MODELS)
    with pytest.raises(UserError) as err:
        find_model(module, "NeedsArgs")
    assert err.value.phase == "load" and err.value.hint


def test_a_factory_that_needs_arguments_is_a_user_error(user_file):
    module = user_file(MODELS)
    with pytest.raises(UserError) as err:
        find_model(module, "make_sized")
    assert err.value.phase == "load" and err.value.hint


def test_a_name_that_is_no_model_is_a_user_error(user_file):
    module = user_file("x = 3\n")
    with pytest.raises(UserError) as err:
        find_model(module, "x")
    assert err.value.phase == "load"


def test_a_missing_model_name_lists_what_the_file_defines(user_file):
    module = user_file(MODELS)
    with pytest.raises(UserError) as err:
        find_model(module, "resnet")
    message = str(err.value)
    assert "resnet" in message
    for defined in ("Net", "build_model", "make_other", "model"):
        assert defined in message
    listed = message.split("defines", 1)[1]
    assert "torch" not in listed, "imported modules are listed as definitions"


def test_a_file_with_no_model_lists_what_it_defines(user_file):
    module = user_file("from torch import nn\nclass Encoder(nn.Module):\n    pass\ndef helper():\n    pass\n")
    with pytest.raises(UserError) as err:
        find_model(module, None)
    assert err.value.phase == "load"
    assert "Encoder" in str(err.value) and "helper" in str(err.value)
    assert "build_model" in (err.value.hint or "")


def test_the_model_files_folder_is_importable_from_it(user_file, tmp_path):
    (tmp_path / "helper_layers_for_test.py").write_text("from torch import nn\nWIDTH = 7\n")
    module = user_file("from helper_layers_for_test import WIDTH\nfrom torch import nn\nmodel = nn.Linear(2, WIDTH)\n")
    assert find_model(module, None).out_features == 7
    sys.modules.pop("helper_layers_for_test", None)


def test_a_missing_model_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        import_model_file(str(tmp_path / "missing.py"))
    assert err.value.phase == "load" and "missing.py" in str(err.value)
