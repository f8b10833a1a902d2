"""Where the suite's time goes: the split by tier (unit, parity, each real ComfyUI version) and the ten
slowest tests, printed at the end of every run, so growth shows when it happens.

A test's time is its setup, call and teardown together: a fixture that builds a model counts for
the first test that asks for it. Tiers: ``tests/comfyui`` by the version it ran against, tests
marked ``parity``, tests marked ``system`` (other processes, a cluster), and the rest (unit).
"""

from __future__ import annotations

import os
from collections import defaultdict

TIMES: dict[str, float] = defaultdict(float)  # node id -> seconds
TIERS: dict[str, str] = {}  # node id -> tier


def tier_of(report) -> str:
    path = report.nodeid.replace(os.sep, "/")
    if path.startswith("tests/comfyui/") or "/comfyui/" in path:
        version = next((v for v in ("0.3.75", "0.33.0") if f"[{v}" in path or f"-{v}" in path), "?")
        return f"ComfyUI {version}"
    if "parity" in report.keywords:
        return "parity"
    return "system" if "system" in report.keywords else "unit"


def pytest_runtest_logreport(report) -> None:
    TIMES[report.nodeid] += report.duration
    TIERS.setdefault(report.nodeid, tier_of(report))


def pytest_terminal_summary(terminalreporter) -> None:
    if not TIMES:
        return
    write = terminalreporter.write_line
    installs = os.environ.get("GROUNDED_SAM_INSTALL_TIMES", "").strip()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for node, seconds in TIMES.items():
        totals[TIERS[node]] += seconds
        counts[TIERS[node]] += 1
    write("")
    if installs:
        write(f"installs: {installs}")
    write("time by tier (setup + call + teardown):")
    known = ("unit", "system", "parity", "ComfyUI 0.3.75", "ComfyUI 0.33.0")
    for tier in sorted(totals, key=lambda t: known.index(t) if t in known else len(known)):
        write(f"  {tier:<16} {counts[tier]:4d} tests {totals[tier]:8.1f} s")
    write(f"  {'all':<16} {len(TIMES):4d} tests {sum(totals.values()):8.1f} s")
    write("ten slowest tests:")
    for node, seconds in sorted(TIMES.items(), key=lambda item: -item[1])[:10]:
        write(f"  {seconds:7.1f} s  {node}")
