"""Per-op capture overhead of the agent without the CLI beside it, to split the figure that
`npm run bench` reports through the CLI into the agent's own cost and what sharing the cores adds.

    /usr/bin/python3 bench/agent_overhead.py bench/models/rnn_loop.py [--runs 5] [--json]

`npm run bench` runs it once per run for the small-op models (--runs 1 --json) and reports the
figures beside the overhead through the CLI.

Prints, per pass (µs, against the model's plain forward in the same process):
  - agent process: a real `python -m torchlens_agent` whose pipe this script drains (the done
    frame's forward_ms, cold, one forward per process, as in an extract; median of the runs);
  - in process, warm (best of 40): capture with a wire that drops frames, one that only packs the
    headers with msgpack, and the real Wire writing to /dev/null.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python_agent"))
sys.path.insert(0, os.path.join(HERE, "..", "python_agent", "tests"))

import msgpack  # noqa: E402
import torch  # noqa: E402

from agent_testlib import extract_request, start_agent  # noqa: E402
from torchlens_agent.capture import CaptureSession, Wrappers, run_captured  # noqa: E402
from torchlens_agent.wire import Wire  # noqa: E402


class DropWire:
    def send(self, header, flush=False):
        pass

    def place(self, record, nbytes, ndim):
        pass

    def send_data(self, pass_id, payload, owned=False):
        pass

    def flush(self, wait=False):
        pass


class PackWire(DropWire):
    def __init__(self):
        self.packer = msgpack.Packer(use_bin_type=True)

    def send(self, header, flush=False):
        self.packer.pack(header)


def best(fn, k=40):
    times = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_file")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("bench_model", a.model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = mod.build_model()
    x = mod.example_input()
    args = x if isinstance(x, tuple) else (x,)

    t = time.perf_counter()
    model(*args)  # autograd on, as the agent runs it
    plain_cold = time.perf_counter() - t

    forwards, passes = [], 0
    for _ in range(a.runs):
        run = start_agent(extract_request(os.path.abspath(a.model_file)), {"type": "shutdown"}).wait()
        done = run.of_type("done")
        if run.rc != 0 or not done:
            sys.exit(f"the agent failed: {run.stderr.decode(errors='replace')[-2000:]}")
        forwards.append(done[0]["forward_ms"] / 1000)
        passes = done[0]["num_passes"]

    plain = best(lambda: model(*args))
    wrappers = Wrappers()
    wrappers.install()
    try:
        def capture(wire):
            session = CaptureSession(wire, model, save="all")
            run_captured(wrappers, session, model, args, {})
            wire.flush(wait=True)
            return session

        n = capture(DropWire()).next_id - 1
        real = Wire(os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY))
        warm = {name: best(lambda w=w: capture(w)) for name, w in
                (("drop", DropWire()), ("pack", PackWire()), ("wire", real))}
    finally:
        wrappers.restore()

    med = statistics.median(forwards)
    per_pass = {name: (t - plain) / n * 1e6 for name, t in warm.items()}
    agent_us = (med - plain_cold) / passes * 1e6
    if a.json:
        print(json.dumps({"passes": passes, "agent_forward_ms": med * 1e3, "plain_cold_ms": plain_cold * 1e3,
                          "agent_us": agent_us, "warm_drop_us": per_pass["drop"],
                          "warm_pack_us": per_pass["pack"], "warm_wire_us": per_pass["wire"]}))
        return
    print(f"{os.path.basename(a.model_file)}: {passes} passes; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"agent process (cold, pipe drained by this script): forward {med * 1e3:.1f} ms "
          f"(min {min(forwards) * 1e3:.1f}, max {max(forwards) * 1e3:.1f}) against plain cold "
          f"{plain_cold * 1e3:.1f} ms -> {agent_us:.1f} us/pass")
    print(f"in process, warm, best of 40, against plain warm {plain * 1e3:.2f} ms: "
          + ", ".join(f"{name} {us:.1f} us/pass" for name, us in per_pass.items()))


if __name__ == "__main__":
    main()
