"""The agent's side of `torchlens dataset`: a pass's tensor → rows, rows written in place, the graph
check, and the whole conversation with a real agent process (on `--device`)."""

import math
import os

import numpy as np
import pytest
import torch

from agent_testlib import start_agent
from torchlens_agent.dataset.rows import RowFile, to_rows
from torchlens_agent.dataset.run import row_difference
from torchlens_agent.dataset.session import first_difference
from torchlens_agent.errors import UserError
from torchlens_agent.load import import_model_file

MODEL = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        if x.mean() > 5:  # only a stimulus far brighter than the others takes this branch
            y = y * 2
        return self.fc(y.mean(dim=(2, 3)))

def build_model():
    torch.manual_seed(0)
    return Net().eval()
'''


def test_rows_pool_the_space_of_a_map_flatten_and_cast_to_the_file_dtype():
    t = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    pooled = to_rows(t, {"pool": "mean", "flatten": False, "descr": "<f2"})
    assert pooled.dtype == np.float16 and pooled.shape == (2, 3)
    np.testing.assert_allclose(pooled, t.mean(dim=(2, 3)).numpy(), rtol=1e-3)
    flat = to_rows(t, {"pool": None, "flatten": True, "descr": "<f4"})
    assert flat.shape == (2, 12) and flat.flags.c_contiguous
    ints = to_rows(torch.ones(2, 3, 2, 2, dtype=torch.int64), {"pool": "mean", "flatten": False, "descr": "<f8"})
    assert ints.dtype == np.float64 and (ints == 1).all()


def test_row_file_writes_rows_at_their_offsets_and_refuses_other_shapes(tmp_path):
    path = str(tmp_path / "l.npy")
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(10, 3)).flush()
    f = RowFile(path, [3], "<f4")
    f.write(4, np.full((2, 3), 7, dtype=np.float32))
    f.sync()
    f.close()
    a = np.load(path)
    assert (a[4:6] == 7).all() and (a[:4] == 0).all() and (a[6:] == 0).all()
    g = RowFile(path, [3], "<f4")
    with pytest.raises(UserError, match="rows of"):
        g.write(0, np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(UserError, match="outside"):
        g.write(9, np.zeros((2, 3), dtype=np.float32))
    g.close()
    with pytest.raises(UserError, match="holds"):
        RowFile(path, [4], "<f4")


def test_first_difference_names_the_first_pass_that_differs():
    ref = [["conv2d", [[1, "0"]]], ["relu", [[2, "0"]]]]
    assert first_difference(ref, [list(r) for r in ref]) == ""
    assert "pass 2 was relu" in first_difference(ref, [ref[0], ["mul", [[2, "0"]]]])
    assert "made 2 passes, this one 1" in first_difference(ref, ref[:1])


def _graph(probe):
    """The probe's passes as a run's reference: [func, parents] in id order."""
    (done,) = probe.of_type("done")
    passes = sorted(probe.of_type("pass"), key=lambda r: r["id"])
    assert len(passes) == done["num_passes"]
    return [[r["func"], r["parents"]] for r in passes]


def _conversation(tmp_path, device, stimuli, reference=None):
    model = tmp_path / "net.py"
    model.write_text(MODEL)
    np.save(tmp_path / "stim.npy", stimuli)
    base = {"model_file": str(model), "model_name": None, "input": {"kind": "none"}, "seed": 0,
            "device": str(device), "grad": False, "workers": 0, "skip_bad": False}
    base["stimuli"] = {"path": str(tmp_path / "stim.npy"), "preset": None, "size": None}
    return base


def test_the_agent_writes_each_batchs_rows_equal_to_the_models_own_outputs(tmp_path, device):
    rng = np.random.default_rng(0)
    stimuli = rng.standard_normal((10, 3, 6, 6)).astype(np.float32)
    request = dict(_conversation(tmp_path, device, stimuli), type="dataset")
    probe = start_agent(request, {"type": "dataset_probe", "start": 0, "stop": 4}, {"type": "shutdown"}).wait()
    assert probe.rc == 0, probe.stderr.decode()
    (listed,) = probe.of_type("stimuli")
    assert listed["n"] == 10
    graph = _graph(probe)
    fc_id = [g[0] for g in graph].index("linear") + 1
    out = tmp_path / "fc.npy"
    np.lib.format.open_memmap(str(out), mode="w+", dtype=np.float32, shape=(10, 2)).flush()
    layer = {"id": fc_id, "label": "linear_1_4", "file": "fc.npy", "row_shape": [2], "descr": "<f4", "pool": None,
             "flatten": False}
    run = start_agent(request, {"type": "dataset_run", "dir": str(tmp_path), "layers": [layer],
                                "reference": graph, "batches": [[0, 0, 4], [1, 4, 8], [2, 8, 10]]},
                      {"type": "shutdown"}).wait()
    assert run.rc == 0, run.stderr.decode()
    assert [b["index"] for b in run.of_type("batch")] == [0, 1, 2]
    mod = import_model_file(str(tmp_path / "net.py"))
    with torch.no_grad():
        want = mod.build_model()(torch.from_numpy(stimuli)).numpy()
    np.testing.assert_allclose(np.load(str(out)), want, rtol=1e-4, atol=1e-5)


def test_a_stimulus_that_changes_the_graph_is_named_with_its_row(tmp_path, device):
    stimuli = np.zeros((6, 3, 6, 6), dtype=np.float32)
    stimuli[4] = 100.0  # bright: takes the extra branch
    request = dict(_conversation(tmp_path, device, stimuli), type="dataset")
    probe = start_agent(request, {"type": "dataset_probe", "start": 0, "stop": 2}, {"type": "shutdown"}).wait()
    run = start_agent(request, {"type": "dataset_run", "dir": str(tmp_path), "layers": [],
                                "reference": _graph(probe), "batches": [[0, 0, 2], [1, 2, 4], [2, 4, 6]]},
                      {"type": "shutdown"}).wait()
    assert [b["index"] for b in run.of_type("batch")] == [0, 1]
    (err,) = run.of_type("error")
    assert "stimulus 4 (row 4) changes the model's graph" in err["message"]
    assert os.path.exists(tmp_path / "stim.npy")


def test_check_rows_match_equal_infinities_and_nans_and_never_a_one_sided_infinity():
    inf, nan = np.inf, np.nan
    assert row_difference(np.array([1.0, -inf, nan]), np.array([1.0, -inf, nan])) == (0.0, 1.0)
    for saved, ref in (([5.0], [inf]), ([inf], [5.0]), ([-inf], [inf]), ([nan], [1.0])):
        diff, scale = row_difference(np.array(saved), np.array(ref))
        assert diff == inf and math.isfinite(scale), (saved, ref)
    assert row_difference(np.array([3.0, 1.0]), np.array([3.5, -8.0])) == (9.0, 8.0)
