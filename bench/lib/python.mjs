/**
 * The Python side of the baselines, as one script written into the bench's temp dir and run with
 * Debian's /usr/bin/python3 (the one with torch). Each mode prints one JSON line on stdout:
 *
 *   versions                 python, torch, numpy, torchvision versions
 *   import                   just `import torch` (the process's wall time is the figure)
 *   plain MODEL grad|nograd  import, build_model(), example_input(), one forward pass
 *   hooks MODEL DIR          the same with a forward hook on every module that np.save()s each
 *                            tensor in the module's output into DIR, one .npy per call
 *   npwrite SIZES.json FILE  np.save() arrays of the given byte sizes, one after another, into FILE
 *
 * Times are perf_counter milliseconds; peak_rss is the process's own ru_maxrss in bytes.
 */
import fs from "node:fs";
import path from "node:path";

export const PYTHON = process.env.TORCHLENS_BENCH_PYTHON || "/usr/bin/python3";

const HARNESS = String.raw`
import json, os, resource, sys, time
T0 = time.perf_counter()


def ms(t):
    return (time.perf_counter() - t) * 1000.0


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(d):
    d["peak_rss"] = peak_rss()
    d["script_ms"] = ms(T0)
    sys.stdout.write(json.dumps(d) + "\n")
    sys.stdout.flush()


def load(path):
    import importlib.util
    import torch
    torch.manual_seed(0)  # as the agent does before importing the model file
    t = time.perf_counter()
    spec = importlib.util.spec_from_file_location("bench_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build_model()
    x = mod.example_input()
    if isinstance(x, dict) and "args" in x:
        args, kwargs = tuple(x.get("args") or ()), dict(x.get("kwargs") or {})
    elif isinstance(x, (tuple, list)):
        args, kwargs = tuple(x), {}
    else:
        args, kwargs = (x,), {}
    torch.manual_seed(0)
    return model, args, kwargs, ms(t)


mode = sys.argv[1]
if mode == "npwrite":
    import numpy as np
    sizes = json.load(open(sys.argv[2]))
    buf = np.ones(max(sizes) if sizes else 1, dtype=np.uint8)  # touched once, outside the timing
    t = time.perf_counter()
    with open(sys.argv[3], "wb") as f:
        for n in sizes:
            np.save(f, buf[:n])
    emit({"write_ms": ms(t), "bytes": sum(sizes), "arrays": len(sizes), "file_bytes": os.path.getsize(sys.argv[3])})
    sys.exit(0)

t = time.perf_counter()
import torch
import numpy as np
import_ms = ms(t)

if mode == "versions":
    try:
        import torchvision
        tv = torchvision.__version__
    except Exception:
        tv = None
    emit({"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
          "torchvision": tv, "threads": torch.get_num_threads(), "executable": sys.executable})
elif mode == "import":
    emit({"import_ms": import_ms})
elif mode == "plain":
    model, args, kwargs, build_ms = load(sys.argv[2])
    grad = sys.argv[3] == "grad"
    with torch.set_grad_enabled(grad):
        t = time.perf_counter()
        y = model(*args, **kwargs)
        forward_ms = ms(t)
    emit({"import_ms": import_ms, "build_ms": build_ms, "forward_ms": forward_ms, "grad": grad})
elif mode == "hooks":
    model, args, kwargs, build_ms = load(sys.argv[2])
    out_dir = sys.argv[3]
    count = [0, 0]

    def save(name, obj):
        if isinstance(obj, torch.Tensor):
            a = obj.detach().cpu().numpy()
            count[0] += 1
            count[1] += a.nbytes
            np.save(os.path.join(out_dir, "%06d_%s.npy" % (count[0], name or "model")), a)
        elif isinstance(obj, (tuple, list)):
            for o in obj:
                save(name, o)
        elif isinstance(obj, dict):
            for o in obj.values():
                save(name, o)

    def hook_for(name):
        return lambda module, inputs, output: save(name, output)

    for name, module in model.named_modules():
        module.register_forward_hook(hook_for(name))
    t = time.perf_counter()
    y = model(*args, **kwargs)  # grad enabled, as the agent runs the model
    forward_ms = ms(t)
    emit({"import_ms": import_ms, "build_ms": build_ms, "forward_ms": forward_ms,
          "arrays": count[0], "bytes": count[1]})
else:
    sys.exit("unknown mode " + mode)
`;

/** Write the harness into `dir` and return its path. */
export function writeHarness(dir) {
  const file = path.join(dir, "harness.py");
  fs.writeFileSync(file, HARNESS);
  return file;
}

/** The JSON line a harness run printed (the last line that parses). */
export function parseLastJson(stdout) {
  const lines = stdout.trim().split("\n").reverse();
  for (const line of lines) {
    try {
      return JSON.parse(line);
    } catch {
      // not the summary line
    }
  }
  return null;
}
