"""Reading a command's `--json` report in tests."""

from __future__ import annotations

import json


def json_rows(stdout: str) -> list[dict]:
    """The per-input rows of a command's `--json` report."""
    report = json.loads(stdout)
    assert set(report) >= {"command", "counts", "results"}, sorted(report)
    return report["results"]
