"""What the two tiny device-check tests (tests/test_device_check*.py) share: the stub peak, the
split of the parts between them, and the check of a saved report."""

import json
import math
import os

from benchmarks import device_check

PEAK = 1e12  # a stub peak FLOP/s: the CPU has none in the table
SPEED_PARTS = ("env", "train", "sampling")


def numbers(rows):
    return [v for row in rows for v in row.values() if isinstance(v, int | float)]


def check_parts(out: str, parts) -> dict:
    """The saved report of a tiny run: ``parts`` ok with finite numbers, the others skipped,
    each part's heading in the Markdown."""
    with open(os.path.join(out, "device_check.json")) as f:
        saved = json.load(f)
    assert saved["parts"].keys() == set(device_check.PARTS)
    with open(os.path.join(out, "device_check.md")) as f:
        table = f.read()
    for name in device_check.PARTS:
        entry = saved["parts"][name]
        if name not in parts:
            assert entry["status"] == "skipped", name
            assert f"## {name}: skipped" in table
            continue
        assert entry["status"] == "ok", (name, entry.get("traceback"))
        assert f"## {name}: ok" in table
        assert entry["rows"], name
        values = numbers(entry["rows"])
        assert values and all(math.isfinite(x) for x in values), (name, entry["rows"])
    return saved
