"""The torchlens agent: runs a user's PyTorch model under capture and streams op records to the CLI.

The CLI (TypeScript) owns the meaning of the records; this package only knows torch. See
docs/wire.md for the protocol.
"""

PROTOCOL = 2
AGENT_VERSION = "0.1.0"
