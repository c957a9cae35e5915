"""benchmarks/device_check.py at its tiny size, in this process (8 fake CPU devices): every part
runs and reports finite numbers, the Markdown lists every part, and MFU is XLA's FLOPs / (s/step
x the peak given)."""

import json
import math
import os

from benchmarks import device_check

PEAK = 1e12  # a stub peak FLOP/s: the CPU has none in the table


def _numbers(rows):
    return [v for row in rows for v in row.values() if isinstance(v, int | float)]


def test_device_check_tiny(tmp_path):
    out = str(tmp_path)
    report = device_check.main(["--tiny", "--out", out, "--peak", str(PEAK)])
    with open(os.path.join(out, "device_check.json")) as f:
        saved = json.load(f)
    assert saved["parts"].keys() == set(device_check.PARTS)
    for name in device_check.PARTS:
        entry = saved["parts"][name]
        assert entry["status"] == "ok", (name, entry.get("traceback"))
        assert entry["rows"], name
        numbers = _numbers(entry["rows"])
        assert numbers and all(math.isfinite(x) for x in numbers), (name, entry["rows"])
    with open(os.path.join(out, "device_check.md")) as f:
        table = f.read()
    for name in device_check.PARTS:
        assert f"## {name}: ok" in table
    assert saved["parts"]["env"]["rows"][0]["peak bf16 TFLOP/s"] == PEAK / 1e12
    train = report["parts"]["train"]["rows"]
    assert {r["variant"] for r in train} == {"base", "base, remat=blocks", "SR"}
    for row in train:
        expected = row["GFLOP/step (XLA)"] * 1e9 / (row["s/step"] * PEAK)
        assert math.isclose(row["MFU"], expected, rel_tol=1e-9)
    assert report["parts"]["precision"]["rows"][0]["agree"] == "yes"
    demo = report["parts"]["demo"]["rows"][0]
    assert demo["steps"] == 2 and math.isfinite(demo["loss at the last step"])


def test_peak_table():
    assert device_check.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert device_check.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert device_check.peak_flops("NVIDIA H200") == 989.4e12
    assert device_check.peak_flops("TPU v5 lite") == 197e12
    assert device_check.peak_flops("TPU v5p") == 459e12
    assert device_check.peak_flops("cpu") is None
