"""Record the agent's raw output for a model, for the wire tests: python3 record_stream.py MODEL.py OUT.bin

The recorded bytes are exactly what the CLI reads from the agent's stdout during an extract.
"""
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
                         "input": {"kind": "example"}, "seed": 0, "device": "cpu", "save": "all"})
agent.stdin.write(struct.pack("<I", len(request)) + request)
agent.stdin.close()
data = agent.stdout.read()
assert agent.wait() == 0
with open(out, "wb") as f:
    f.write(data)
print(f"{out}: {len(data)} bytes")
