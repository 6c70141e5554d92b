"""A conv net whose activations total about ACT_MB megabytes (env TORCHLENS_BENCH_MB, default 1000)."""
import os

import torch
from torch import nn

MB = float(os.environ.get("TORCHLENS_BENCH_MB", "1000"))


class BigConv(nn.Module):
    def __init__(self, layers: int = 12, channels: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(layers))

    def forward(self, x):
        x = self.stem(x)
        for conv in self.blocks:
            x = torch.relu(conv(x))
        return x.mean()


def build_model():
    torch.manual_seed(0)
    return BigConv().eval()


def example_input():
    # per spatial position: 16 channels * 4 bytes * (1 stem + 12 * 2) passes = 1600 bytes
    side = int((MB * 1e6 / 1600) ** 0.5)
    return torch.randn(1, 3, side, side)
