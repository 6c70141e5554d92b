"""A few zoo models (zoo/models.py) and tricky fixtures, extracted and validated by the agent alone,
on `--device`: the way to check real architectures on a machine with a GPU but no Node.

What the CLI does between the two requests is done here in a few lines: the saved payloads go into
an npz (keys `p<id>`), and the validate request lists every recorded pass with its parents and the
output passes in the order the model returns them (src/validate/plan.ts).

    python3 -m pytest python_agent -k zoo --device cuda
"""

import importlib.util
import os

import numpy as np
import pytest

from agent_testlib import AgentRun, extract_request, output_ids, start_agent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(ROOT, "zoo", "models.py")
FIXTURES = os.path.join(ROOT, "fixtures")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _extract(model_file: str, device, **fields) -> AgentRun:
    run = start_agent(extract_request(model_file, device=str(device), **fields)).wait(timeout=600)
    errors = run.of_type("error")
    assert not errors, f"{errors[0]['phase']}: {errors[0]['exc_type']}: {errors[0]['message']}"
    assert run.rc == 0, run.stderr.decode(errors="replace")[-2000:]
    return run


def _validate(run: AgentRun, model_file: str, device, tmp_path, **fields) -> dict:
    records = run.of_type("pass")
    npz = tmp_path / "activations.npz"
    np.savez(npz, **{f"p{r['id']}": run.array(r["id"]) for r in records if r["stored_dtype"] is not None})
    by_id = {r["id"]: r for r in records}
    expected = [{"id": r["id"], "func": r["func"], "kind": r["kind"], "shape": r["shape"], "dtype": r["dtype"],
                 "array": f"p{r['id']}" if r["stored_dtype"] is not None else None,
                 "parents": [pid for pid, _ in r["parents"]]} for r in records]
    (done,) = run.of_type("done")
    outputs = [{"id": i, "array": f"p{i}", "dtype": by_id[i]["dtype"]} for i in output_ids(done["outputs"])]
    request = dict(extract_request(model_file, device=str(device), **fields), type="validate", npz=str(npz),
                   expected=expected, outputs=outputs, check_dependence=True)
    check = start_agent(request).wait(timeout=600)
    errors = check.of_type("error")
    assert not errors, f"{errors[0]['phase']}: {errors[0]['exc_type']}: {errors[0]['message']}"
    (verdict_done,) = check.of_type("done")
    failed = [f"{v['id']} [{v['func']}]: {v['reason']}" for v in check.of_type("verdict") if v["status"] == "failed"]
    assert failed == []
    assert [g for g in verdict_done["ground_truth"] if not g["ok"]] == []
    assert verdict_done["num_passes"] == done["num_passes"]
    assert verdict_done["num_ops"] == done["num_ops"]
    return verdict_done


ZOO_MODELS = [
    ("resnet18", "torchvision"),
    ("vit_b_16", "torchvision"),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "torchvision"),
    ("wav2vec2_base", "torchaudio"),
]


@pytest.mark.parametrize("name, package", ZOO_MODELS, ids=[n for n, _ in ZOO_MODELS])
def test_a_zoo_model_extracts_and_validates_on_the_device(name, package, device, tmp_path, monkeypatch):
    if not _has(package):
        pytest.skip(f"{package} is not installed")
    monkeypatch.setenv("TORCHLENS_ZOO_MODEL", name)  # start_agent passes the environment on
    run = _extract(ZOO, device)
    records = run.of_type("pass")
    assert len(records) > 50
    assert {r["device"].split(":")[0] for r in records if r["kind"] == "op"} == {device.type}
    done = _validate(run, ZOO, device, tmp_path)
    assert done["counts"]["passed"] > 0


TRICKY = ["tricky_packed_lstm", "tricky_scripted", "tricky_tensor_from_tensors", "tricky_view_inplace"]


@pytest.mark.parametrize("name", TRICKY)
def test_a_tricky_fixture_extracts_and_validates_on_the_device(name, device, tmp_path):
    model_file = os.path.join(FIXTURES, f"{name}.py")
    run = _extract(model_file, device)
    assert not [r for r in run.of_type("pass") if r["kind"] == "constant"]
    _validate(run, model_file, device, tmp_path)
