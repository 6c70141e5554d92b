"""Record what the agent says about a model (no bytes) as the JSON the log pipeline takes (RawRun):
python3 record_raw.py MODEL.py OUT.json — for the unit tests of src/log, which never spawn Python."""
import json
import os
import struct
import subprocess
import sys

import msgpack

here = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, PYTHONPATH=os.path.join(here, "..", "..", "python_agent"))
model, out = sys.argv[1], sys.argv[2]
agent = subprocess.Popen([sys.executable, "-m", "torchlens_agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
request = msgpack.packb({"type": "extract", "model_file": os.path.abspath(model), "model_name": None,
                         "input": {"kind": "example"}, "seed": 0, "device": "cpu", "save": "none"})
agent.stdin.write(struct.pack("<I", len(request)) + request)
agent.stdin.close()
raw = {"ops": [], "moduleCalls": []}
while True:
    head = agent.stdout.read(4)
    if not head:
        break
    frame = msgpack.unpackb(agent.stdout.read(struct.unpack("<I", head)[0]), raw=False)
    kind = frame.pop("type")
    if kind == "model":
        raw["model"] = frame
    elif kind == "pass":
        raw["ops"].append(frame)
    elif kind == "module":
        raw["moduleCalls"].append(frame)
    elif kind == "done":
        raw.update(outputs=frame["outputs"], numOps=frame["num_ops"], torchCalls=frame["torch_calls"], forwardMs=0)
    elif kind == "error":
        sys.exit(f"agent error: {frame}")
assert agent.wait() == 0
with open(out, "w") as f:
    json.dump(raw, f, separators=(",", ":"))
print(f"{out}: {len(raw['ops'])} passes")
