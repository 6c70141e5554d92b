"""The agent's side of the selector table shared with the CLI (test/fixtures/selection.json): for
every selection the CLI hands the agent to decide while ops happen, the agent's save plan picks
exactly the passes the CLI's selector rules pick on the same recorded run."""

import json
from pathlib import Path

import pytest

from torchlens_agent.capture.plan import SavePlan

FIXTURES = Path(__file__).resolve().parents[2] / "test" / "fixtures"
TABLE = json.loads((FIXTURES / "selection.json").read_text())["cases"]


def _recorded(run: str) -> dict:
    return json.loads((FIXTURES / "raw" / f"{run}.json").read_text())


@pytest.mark.parametrize(
    "case",
    [c for c in TABLE if c["agent"] is not None],
    ids=lambda c: f"{c['run']}:{','.join(c['selectors'])}",
)
def test_the_agent_saves_exactly_the_passes_the_cli_selects(case):
    raw = _recorded(case["run"])
    addresses = {m["address"] for m in raw["model"]["modules"]}
    plan = SavePlan(case["agent"], addresses)
    assert [op["id"] for op in raw["ops"] if plan.wants(op)] == case["ids"]


def test_the_table_covers_both_sides_of_the_line():
    decided = [c for c in TABLE if c["agent"] is not None]
    assert decided and len(decided) < len(TABLE), "the table must hold selectors of both kinds"
