"""Stimuli for the dataset tests, generated (no downloads):

  make_stimuli.py npy FILE N [C H W]       N seeded random images as one float32 .npy
  make_stimuli.py images DIR N [options]   N seeded PNG/JPEG images, 32×32 unless --mixed
      --mixed          every third image 40×24 (for the mixed-sizes error and the presets)
      --truncated K    image K is cut off half-way (an unreadable file)
      --bright K,...   these images are white (a dynamic model branches on brightness)
      --nested         images spread over subfolders (sorted by relative path)
      --size S         S×S images instead of 32×32
"""

import os
import sys

import numpy as np


def images(folder, n, args):
    from PIL import Image

    mixed = "--mixed" in args
    nested = "--nested" in args
    truncated = int(args[args.index("--truncated") + 1]) if "--truncated" in args else -1
    bright = {int(v) for v in args[args.index("--bright") + 1].split(",")} if "--bright" in args else set()
    size = int(args[args.index("--size") + 1]) if "--size" in args else 32
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (24, 40) if mixed and i % 3 == 2 else (size, size)
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        if i in bright:
            pixels[:] = 255
        sub = os.path.join(folder, f"set{i % 3}") if nested else folder
        os.makedirs(sub, exist_ok=True)
        ext = "jpg" if i % 4 == 1 else "png"
        path = os.path.join(sub, f"img_{i:04d}.{ext}")
        Image.fromarray(pixels).save(path)
        if i == truncated:
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])


def main():
    kind, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "npy":
        c, h, w = (int(v) for v in sys.argv[4:7]) if len(sys.argv) >= 7 else (3, 32, 32)
        rng = np.random.default_rng(0)
        np.save(target, rng.standard_normal((n, c, h, w)).astype(np.float32))
    elif kind == "images":
        images(target, n, sys.argv[4:])
    else:
        sys.exit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
