"""Images: decoding with Pillow and the preprocessing presets.

Pillow is imported only when an image is read, so array stimuli need no Pillow. The `imagenet`
preset is torchvision's Resize(256) → CenterCrop(224) → ToTensor() → Normalize(mean, std), written
with Pillow and numpy so that the agent does not need torchvision (the tests check it against
torchvision where it is installed).
"""

from typing import Any, Optional

import numpy as np
import torch

from ..errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise UserError("stimuli", "reading images needs Pillow (PIL), which this Python lacks",
                        "install it (pip install pillow, or apt-get install python3-pil), or give the stimuli "
                        "as a .npy/.pt array") from exc
    return Image


def decode(path: str) -> Any:
    """The image at `path` as an RGB Pillow image, read whole (so a truncated file fails here)."""
    Image = pillow()
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def to_tensor(img: Any) -> torch.Tensor:
    """float32 CHW in [0, 1], as torchvision's ToTensor."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def imagenet(img: Any, size: Optional[int] = None) -> torch.Tensor:
    crop = int(size or 224)
    short = int(round(crop * 256 / 224))
    Image = pillow()
    w, h = img.size
    if (w <= h and w != short) or (h < w and h != short):  # torchvision's Resize(int): the shorter side
        if w <= h:
            nw, nh = short, int(short * h / w)
        else:
            nw, nh = int(short * w / h), short
        img = img.resize((nw, nh), Image.BILINEAR)
    w, h = img.size
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    t = to_tensor(img)
    return (t - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None]


def preprocess(img: Any, preset: Optional[str], size: Optional[int]) -> torch.Tensor:
    if preset == "imagenet":
        return imagenet(img, size)
    return to_tensor(img)
