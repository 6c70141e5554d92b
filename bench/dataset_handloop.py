"""The loop people write by hand to get per-layer feature matrices, for `npm run bench -- --only
dataset` (bench/dataset.mjs): a DataLoader with torchvision's ImageNet transforms, forward hooks on
the same modules torchlens saves, numpy writing the same arrays (memory-mapped .npy files), under
torch.no_grad(). Prints one JSON line.

    dataset_handloop.py MODEL_FILE IMAGES_DIR OUT_DIR BATCH WORKERS MODULE[,MODULE...]
    dataset_handloop.py images DIR N         generate N seeded 224×224 JPEG images into DIR
    dataset_handloop.py compare A_DIR B_DIR MODULE[,...]   the largest relative difference of the outputs
"""

import importlib.util
import json
import os
import sys
import time


def generate(folder, n):
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    # smooth random images (JPEG of white noise is far larger and slower to decode than a photo's)
    bases = []
    for _ in range(16):
        small = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
        bases.append(np.asarray(Image.fromarray(small).resize((224, 224), Image.BICUBIC)))
    for i in range(n):
        img = np.roll(bases[i % 16], (i // 16) % 224, axis=1)
        Image.fromarray(img).save(os.path.join(folder, f"img_{i:05d}.jpg"), quality=90)
    print(json.dumps({"images": n}))


def handloop(model_file, folder, out, batch, workers, modules):
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T

    spec = importlib.util.spec_from_file_location("bench_model", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build_model()
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(os.path.join(folder, files[i])).convert("RGB"))

    loader = torch.utils.data.DataLoader(Images(), batch_size=batch, num_workers=workers)
    features = {}
    for name in modules:
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: features.__setitem__(name, o))
    os.makedirs(out, exist_ok=True)
    arrays = {}
    row = 0
    with torch.no_grad():
        for x in loader:
            model(x)
            for name in modules:
                a = features[name].numpy()
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(os.path.join(out, f"{name}.npy"), mode="w+",
                                                             dtype=a.dtype, shape=(len(files),) + a.shape[1:])
                arrays[name][row:row + len(a)] = a
            row += len(x)
    for a in arrays.values():
        a.flush()
    print(json.dumps({"stimuli": row, "seconds": time.perf_counter() - t0}))


def compare(a_dir, b_dir, modules):
    """torchlens's dataset (a_dir, its index.json; one layer per module, in execution order)
    against the hand loop's arrays (b_dir, one per module)."""
    import numpy as np

    index = json.load(open(os.path.join(a_dir, "index.json")))
    assert len(index["layers"]) == len(modules), [layer["label"] for layer in index["layers"]]
    worst = 0.0
    for layer, module in zip(index["layers"], modules):
        a = np.load(os.path.join(a_dir, layer["file"]), mmap_mode="r")
        b = np.load(os.path.join(b_dir, f"{module}.npy"), mmap_mode="r")
        assert a.shape == b.shape, (layer["label"], a.shape, b.shape)
        for s in range(0, a.shape[0], 64):
            x, y = np.asarray(a[s:s + 64], np.float64), np.asarray(b[s:s + 64], np.float64)
            worst = max(worst, float(np.abs(x - y).max() / max(1.0, float(np.abs(y).max()))))
    print(json.dumps({"max_rel": worst}))


if __name__ == "__main__":
    if sys.argv[1] == "images":
        generate(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4].split(","))
    else:
        handloop(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6].split(","))
