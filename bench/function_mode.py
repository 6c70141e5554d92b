"""What a pass-through TorchFunctionMode costs per torch call (docs/capture.md, "Why a walk").

    /usr/bin/python3 bench/function_mode.py        # torch 1.13
    .venv-torch2/bin/python bench/function_mode.py  # torch 2.x

Times 60,000 small calls (torch.add, Tensor.relu, *) without and with a mode whose handler only
calls the function, best of 3, and prints microseconds per call.
"""

import time

import torch
from torch.overrides import TorchFunctionMode


class PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        return func(*args, **(kwargs or {}))


def per_call_us() -> float:
    x = torch.randn(4, 4)
    for _ in range(200):
        x.add(1)
    t0 = time.perf_counter()
    for _ in range(20000):
        y = torch.add(x, 1)
        y = y.relu()
        y = y * 2
    return (time.perf_counter() - t0) / 60000 * 1e6


if __name__ == "__main__":
    plain = min(per_call_us() for _ in range(3))
    with PassThrough():
        moded = min(per_call_us() for _ in range(3))
    print(f"torch {torch.__version__}: plain {plain:.2f} us/call, with a pass-through mode {moded:.2f} us/call "
          f"(+{moded - plain:.2f})")
