"""A small transformer of many tiny ops: nn.TransformerEncoder, d_model 32, 4 layers, sequence 16."""
import torch
from torch import nn

D_MODEL = 32
LAYERS = 4
SEQ = 16


def build_model():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=D_MODEL, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=LAYERS, enable_nested_tensor=False).eval()


def example_input():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, SEQ, D_MODEL, generator=g)
