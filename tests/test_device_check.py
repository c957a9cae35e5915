"""benchmarks/device_check.py at its tiny size, in this process (8 fake CPU devices): every part
runs and reports finite numbers, the Markdown lists every part, and MFU is XLA's FLOPs / (s/step
x the peak given)."""

import dataclasses
import json
import math
import os

from benchmarks import device_check, device_parts

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


def test_batch_search_keeps_the_fitted_plan_under_the_device_memory():
    """What only an accelerator reaches: XLA's plan 20 GiB at batch 8 and 24 GiB at 16 is
    0.5 GiB per example; on 80 GiB (92 % usable: 73.6) 32 and 64 fit, 128 (80 GiB) does not."""
    gib, sizes = 2**30, dataclasses.replace(device_parts.FULL, max_batch=0)
    plans = {8: 20 * gib, 16: 24 * gib}
    assert device_parts.batch_candidates(sizes, plans, 80 * gib) == [64, 32]
    assert device_parts.batch_candidates(sizes, plans, 25 * gib) == []
    capped = dataclasses.replace(sizes, max_batch=32)
    assert device_parts.batch_candidates(capped, plans, 80 * gib) == [32]
