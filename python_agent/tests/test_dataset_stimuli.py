"""The stimuli of `torchlens dataset`: what a path means, the order, the presets, the model file's
hooks, bad and mixed stimuli, and the loader's workers keeping the order."""

import os
import textwrap
from typing import Any

import numpy as np
import pytest
import torch

from torchlens_agent.dataset.loader import iter_batches
from torchlens_agent.dataset.stimuli import open_stimuli
from torchlens_agent.errors import UserError
from torchlens_agent.load import import_model_file

try:
    from PIL import Image
except ImportError:  # the torch 2 environment has no Pillow
    Image: Any = None
needs_pil = pytest.mark.skipif(Image is None, reason="this Python has no Pillow")


class NoHooks:
    pass


def _image(path, h=32, w=32, seed=0, value=None):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if value is not None:
        pixels[:] = value
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def _module(tmp_path, body):
    path = tmp_path / "hooks_model.py"
    path.write_text("import torch\nimport numpy as np\nfrom torch import nn\n" + textwrap.dedent(body))
    return import_model_file(str(path))


@needs_pil
def test_a_folder_is_its_images_recursively_in_path_order_hidden_files_skipped(tmp_path):
    for name in ["b/z.png", "a.JPG", "b/a.jpeg", "c/d/e.bmp", ".hidden/x.png", "b/.h.png"]:
        _image(str(tmp_path / "s" / name))
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    s = open_stimuli({"path": str(tmp_path / "s")}, NoHooks())
    assert s.kind == "folder"
    assert s.ids == ["a.JPG", "b/a.jpeg", "b/z.png", "c/d/e.bmp"]
    t = s.load(0)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32 and 0 <= float(t.min()) and float(t.max()) <= 1


@needs_pil
def test_a_list_file_holds_paths_relative_to_itself_and_names_a_missing_line(tmp_path):
    _image(str(tmp_path / "imgs" / "one.png"))
    _image(str(tmp_path / "imgs" / "two.png"), seed=1)
    (tmp_path / "list.txt").write_text("# stimuli\nimgs/two.png\n\nimgs/one.png\n")
    s = open_stimuli({"path": str(tmp_path / "list.txt")}, NoHooks())
    assert s.kind == "list" and s.ids == ["imgs/two.png", "imgs/one.png"]
    (tmp_path / "bad.txt").write_text("imgs/one.png\nimgs/gone.png\n")
    with pytest.raises(UserError, match="line 2: imgs/gone.png is not a file"):
        open_stimuli({"path": str(tmp_path / "bad.txt")}, NoHooks())


def test_npy_and_pt_arrays_are_one_stimulus_per_row(tmp_path):
    x = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    np.save(tmp_path / "x.npy", x)
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    torch.save([torch.from_numpy(r) for r in x], tmp_path / "list.pt")
    for name in ["x.npy", "x.pt", "list.pt"]:
        s = open_stimuli({"path": str(tmp_path / name)}, NoHooks())
        assert s.kind == "array" and s.ids == ["0", "1", "2", "3", "4"]
        assert torch.equal(s.load(3), torch.from_numpy(x[3]))


def test_stimuli_from_the_model_files_generator_with_and_without_ids(tmp_path):
    mod = _module(tmp_path, """
        def stimuli():
            for i in range(4):
                yield f"s{i}", torch.full((2,), float(i))
    """)
    s = open_stimuli({"path": None}, mod)
    assert s.kind == "hook" and s.sequential and s.ids == ["s0", "s1", "s2", "s3"]
    (batch,) = list(iter_batches(s, [(2, 4)], 0, False))
    assert batch.inputs.tolist() == [[2.0, 2.0], [3.0, 3.0]]
    plain = _module(tmp_path, "def stimuli():\n    return [np.zeros(3, dtype=np.float32)] * 2\n")
    assert open_stimuli({"path": None}, plain).ids == ["0", "1"]


@needs_pil
def test_load_stimulus_and_transform_from_the_model_file_replace_decoding_and_the_preset(tmp_path):
    _image(str(tmp_path / "s" / "a.png"))
    mod = _module(tmp_path, """
        def transform(image):
            return torch.tensor([float(image.size[0]), float(image.size[1])])
    """)
    assert open_stimuli({"path": str(tmp_path / "s")}, mod).load(0).tolist() == [32.0, 32.0]
    mod2 = _module(tmp_path, """
        def load_stimulus(path):
            return np.full((1,), len(path), dtype=np.float32)
    """)
    s = open_stimuli({"path": str(tmp_path / "s")}, mod2)
    assert s.load(0).tolist() == [float(len(str(tmp_path / "s" / "a.png")))]


@needs_pil
def test_the_imagenet_preset_equals_torchvisions_transforms(tmp_path):
    tv = pytest.importorskip("torchvision.transforms", reason="torchvision is not installed")
    _image(str(tmp_path / "s" / "wide.png"), h=300, w=451)
    _image(str(tmp_path / "s" / "tall.png"), h=500, w=260, seed=2)
    ref = tv.Compose([tv.Resize(256), tv.CenterCrop(224), tv.ToTensor(),
                      tv.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    s = open_stimuli({"path": str(tmp_path / "s"), "preset": "imagenet"}, NoHooks())
    for i, sid in enumerate(s.ids):
        want = ref(Image.open(tmp_path / "s" / sid).convert("RGB"))
        got = s.load(i)
        assert got.shape == (3, 224, 224)
        assert float((got - want).abs().max()) < 1e-6


@needs_pil
def test_mixed_sizes_name_two_stimuli_and_a_truncated_image_is_named_with_its_path(tmp_path):
    _image(str(tmp_path / "s" / "a.png"))
    _image(str(tmp_path / "s" / "b.png"), h=20, w=40)
    s = open_stimuli({"path": str(tmp_path / "s")}, NoHooks())
    with pytest.raises(UserError, match=r"a.png is \(3, 32, 32\) but b.png is \(3, 20, 40\)"):
        list(iter_batches(s, [(0, 2)], 0, False))
    _image(str(tmp_path / "t" / "a.png"))
    _image(str(tmp_path / "t" / "b.png"), seed=3)
    data = (tmp_path / "t" / "b.png").read_bytes()
    (tmp_path / "t" / "b.png").write_bytes(data[: len(data) // 2])
    t = open_stimuli({"path": str(tmp_path / "t")}, NoHooks())
    with pytest.raises(UserError, match=r"cannot read stimulus b.png \(.*b.png\): OSError") as err:
        list(iter_batches(t, [(0, 2)], 2, False))
    assert "--skip-bad" in (err.value.hint or "")
    (batch,) = list(iter_batches(t, [(0, 2)], 2, True))
    assert batch.bad[0][:2] == (1, "b.png") and float(batch.inputs[1].abs().sum()) == 0.0


@needs_pil
def test_workers_give_the_same_batches_in_the_same_order_as_none(tmp_path):
    for i in range(11):
        _image(str(tmp_path / "s" / f"{i:02d}.png"), seed=i)
    s = open_stimuli({"path": str(tmp_path / "s")}, NoHooks())
    ranges = [(0, 4), (8, 11), (4, 8)]
    alone = [b.inputs for b in iter_batches(s, ranges, 0, False)]
    workers = list(iter_batches(s, ranges, 2, False))
    assert [(b.start, b.stop) for b in workers] == ranges
    assert all(torch.equal(a, b.inputs) for a, b in zip(alone, workers))


@needs_pil
def test_the_fingerprint_changes_when_a_file_changes_or_is_added(tmp_path):
    _image(str(tmp_path / "s" / "a.png"))
    first = open_stimuli({"path": str(tmp_path / "s")}, NoHooks()).fingerprint
    assert open_stimuli({"path": str(tmp_path / "s")}, NoHooks()).fingerprint == first
    os.utime(tmp_path / "s" / "a.png", ns=(1, 1))
    touched = open_stimuli({"path": str(tmp_path / "s")}, NoHooks()).fingerprint
    assert touched != first
    _image(str(tmp_path / "s" / "b.png"))
    assert open_stimuli({"path": str(tmp_path / "s")}, NoHooks()).fingerprint != touched


def test_an_empty_set_or_a_missing_path_says_what_stimuli_can_be(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no stimuli found"):
        open_stimuli({"path": str(tmp_path / "empty")}, NoHooks())
    with pytest.raises(UserError, match="stimuli not found"):
        open_stimuli({"path": str(tmp_path / "nope")}, NoHooks())
    with pytest.raises(UserError, match="defines no stimuli"):
        open_stimuli({"path": None}, NoHooks())
    np.save(tmp_path / "none.npy", np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(UserError, match="no stimuli found"):
        open_stimuli({"path": str(tmp_path / "none.npy")}, NoHooks())
