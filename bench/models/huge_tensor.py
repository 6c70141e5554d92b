"""One activation larger than 4 GiB (TORCHLENS_HUGE_GIB, default 4.5), for the ZIP64 path of a real run."""
import os

import torch
from torch import nn

GIB = float(os.environ.get("TORCHLENS_HUGE_GIB", "4.5"))


class Huge(nn.Module):
    def forward(self, x):
        n = int(GIB * (1 << 30) // 4)
        big = x.expand(n).contiguous()  # one float32 tensor of GIB gibibytes
        return big[-3:] * 2


def build_model():
    return Huge()


def example_input():
    return torch.tensor([1.5])
