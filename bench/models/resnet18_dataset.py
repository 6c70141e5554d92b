"""torchvision's resnet18 (random weights, eval mode), for the dataset benchmark: its inputs come
from the stimuli, so it has no example input."""
import torch
import torchvision


def build_model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()
