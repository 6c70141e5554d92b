"""Entry point: `python -m torchlens_agent`, spawned by the torchlens CLI.

Before anything heavy is imported, check that torch, numpy and msgpack exist; when one is missing
say so in a line the CLI recognises and exit 3, so the CLI can try another Python.

With TORCHLENS_AGENT_STANDBY=1 in the environment (the CLI's search for a Python starts the later
candidates this way, beside the first), an agent whose Python has the packages waits, before
importing anything heavy, for one byte on stdin: the CLI sends it when the candidates before this
one turned out to lack the packages, and closes stdin (the agent exits quietly) when one of them
was chosen. The byte is read from the descriptor itself, so no buffer reads past it into the wire.
"""

import importlib.util
import os
import sys

MISSING_EXIT = 3


def _missing():
    return [name for name in ("torch", "numpy", "msgpack") if importlib.util.find_spec(name) is None]


if __name__ == "__main__":
    missing = _missing()
    if missing:
        sys.stderr.write("TORCHLENS_MISSING " + ",".join(missing) + "\n")
        sys.exit(MISSING_EXIT)
    if os.environ.pop("TORCHLENS_AGENT_STANDBY", None) == "1":
        try:
            go = os.read(0, 1)
        except KeyboardInterrupt:
            go = b""
        if not go:
            sys.exit(0)
    import gc

    from torchlens_agent.agent import main

    code = main()
    # Everything is sent. Python's shutdown then walks every object torch made in collections of
    # its own, about half a second (0.6 s with torch 2 on the machine of bench/RESULTS.md, against
    # 0.15 s frozen) that the CLI would wait for. Frozen, the shutdown is otherwise the same:
    # atexit handlers run, modules are torn down, files are flushed and closed.
    gc.freeze()
    sys.exit(code)
