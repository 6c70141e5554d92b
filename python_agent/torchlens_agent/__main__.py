"""Entry point: `python -m torchlens_agent`, spawned by the torchlens CLI.

Before anything heavy is imported, check that torch, numpy and msgpack exist; when one is missing
say so in a line the CLI recognises and exit 3, so the CLI can try another Python.
"""

import importlib.util
import sys

MISSING_EXIT = 3


def _missing():
    return [name for name in ("torch", "numpy", "msgpack") if importlib.util.find_spec(name) is None]


if __name__ == "__main__":
    missing = _missing()
    if missing:
        sys.stderr.write("TORCHLENS_MISSING " + ",".join(missing) + "\n")
        sys.exit(MISSING_EXIT)
    from torchlens_agent.agent import main

    sys.exit(main())
