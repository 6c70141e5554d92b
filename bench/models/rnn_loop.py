"""An Elman RNN cell (Linear + Linear + tanh) stepped 200 times over a sequence: one layer, 200 passes."""
import torch
from torch import nn

STEPS = 200
FEATURES = 32
HIDDEN = 64
BATCH = 4


class RNNLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.ih = nn.Linear(FEATURES, HIDDEN)
        self.hh = nn.Linear(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, seq):
        h = torch.zeros(seq.shape[1], HIDDEN)
        for t in range(seq.shape[0]):
            h = torch.tanh(self.ih(seq[t]) + self.hh(h))
        return self.head(h)


def build_model():
    torch.manual_seed(0)
    return RNNLoop().eval()


def example_input():
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, BATCH, FEATURES, generator=g)
