"""torchvision's resnet18 (random weights, eval mode) at batch 8, 224x224."""
import torch
import torchvision

BATCH = 8


def build_model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def example_input():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 224, 224, generator=g)
