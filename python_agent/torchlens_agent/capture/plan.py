"""The save plan: which passes an extract sends the bytes of, decided as each op happens.

The selection rules are shared with the CLI (test/fixtures/selection.json checks both sides).
"""

from typing import Any, Dict

class SavePlan:
    """Which passes get their bytes sent: "all", "none", or a selection the agent can decide as ops
    happen (docs/wire.md): `ids` (pass ids, from a dry run), `words` (a module address when the
    model has one by that name, else a function name), `modules` (addresses), `ordinals`
    (0-based positions in execution order, i.e. pass id - 1)."""

    def __init__(self, spec: Any, addresses: set):
        self.all = spec == "all" or spec is None
        self.none = spec == "none"
        spec = spec if isinstance(spec, dict) else {}
        words = list(spec.get("words", []))
        self.modules = set(spec.get("modules", [])) | {w for w in words if w in addresses}
        self.names = {w for w in words if w not in addresses}
        self.ids = set(spec.get("ids", [])) | {k + 1 for k in spec.get("ordinals", [])}

    def wants(self, record: Dict[str, Any]) -> bool:
        """The record's pass is saved (read from fields the record already has)."""
        if self.all:
            return True
        if self.none:
            return False
        if record["id"] in self.ids or record["name"] in self.names or record["func"] in self.names:
            return True
        return bool(self.modules) and any(m[0] in self.modules for m in record["modules"])

