"""pytest setup for the agent's tests: import paths and the `--device` option.

`python3 -m pytest python_agent` works from the repository root with no PYTHONPATH: this file puts
`python_agent/` (the `torchlens_agent` package) and `python_agent/tests/` (the shared helpers in
`agent_testlib.py`) on sys.path, whatever pytest's import mode.

`--device cpu|cuda|cuda:N` (default cpu) is where tests that move models and inputs run them. Checks
that only make sense on a GPU ask for the `cuda_device` fixture and are skipped on cpu.
"""

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_HERE, "tests"), _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="torch device for tests that move models and inputs: cpu (default), cuda or cuda:N")


@pytest.fixture(scope="session")
def device(request):
    """The torch.device the tests run models on; asking for cuda where torch sees no GPU is an error."""
    import torch

    name = request.config.getoption("--device")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"--device {name} was given, but torch {torch.__version__} sees no GPU", pytrace=False)
    return dev


@pytest.fixture(scope="session")
def cuda_device(device):
    """The cuda device under test; skips the test when the run is on cpu."""
    if device.type != "cuda":
        pytest.skip("needs --device cuda")
    return device
