"""torchvision's densenet201 (random weights, eval mode) at one 64x64 image: 1115 passes, most of
them small, with dense concatenations — a large graph for `torchlens graph` (bench/graph.mjs)."""
import torch
import torchvision


def build_model():
    torch.manual_seed(0)
    return torchvision.models.densenet201(weights=None).eval()


def example_input():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 64, 64, generator=g)
