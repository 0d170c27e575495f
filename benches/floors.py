"""Floors for the ratios the short benchmarks print: CI fails when a ratio falls below its floor.

Floors are ratios measured in one run (never times: the machines are shared and noisy), set well
under the figures of today (benches/floors.json says which and when), so only a real regression
trips them. A bench run with --check-floors calls :func:`check_floors` with its figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FLOORS = Path(__file__).resolve().parent / "floors.json"


def figure(figures: dict[str, Any], dotted: str) -> float | None:
    value: Any = figures
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def check_floors(bench: str, figures: dict[str, Any]) -> int:
    """Prints each floored ratio beside its floor; returns 1 when one is below (or missing)."""
    floors: dict[str, dict[str, Any]] = json.loads(FLOORS.read_text())[bench]["floors"]
    failed = 0
    print(f"floors ({FLOORS.name}, {bench}):")
    for name, entry in floors.items():
        value = figure(figures, name)
        ok = value is not None and value >= entry["floor"]
        failed += not ok
        shown = "missing" if value is None else f"{value:.3f}"
        print(f"  {'ok  ' if ok else 'FAIL'} {name} = {shown} (floor {entry['floor']}; {entry['why']})")
    return 1 if failed else 0
