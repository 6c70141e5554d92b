"""An LSTM cell written out op by op (two Linears, a chunk, three sigmoids, two tanh, products and
sums) stepped 100 times over a sequence, batch 4, hidden 32: about 1,300 tiny passes."""
import torch
from torch import nn

STEPS = 100
FEATURES = 16
HIDDEN = 32
BATCH = 4


class LSTMLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.ih = nn.Linear(FEATURES, 4 * HIDDEN)
        self.hh = nn.Linear(HIDDEN, 4 * HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, seq):
        h = torch.zeros(seq.shape[1], HIDDEN)
        c = torch.zeros(seq.shape[1], HIDDEN)
        for t in range(seq.shape[0]):
            i, f, g, o = (self.ih(seq[t]) + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


def build_model():
    torch.manual_seed(0)
    return LSTMLoop().eval()


def example_input():
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, BATCH, FEATURES, generator=g)
