"""benchmarks/device_check.py at its tiny size, the parts that are not speed (precision, the input
pipeline, the demo's first steps; the others: tests/test_device_check_train.py), and its pieces:
the peak table and the batch search's fit."""

import dataclasses
import math

from device_check_report import PEAK, SPEED_PARTS, check_parts

from benchmarks import device_check, device_parts

OTHER_PARTS = tuple(p for p in device_check.PARTS if p not in SPEED_PARTS)


def test_device_check_tiny_other_parts(tmp_path):
    out = str(tmp_path)
    report = device_check.main(
        ["--tiny", "--out", out, "--peak", str(PEAK), "--skip", ",".join(SPEED_PARTS)]
    )
    check_parts(out, OTHER_PARTS)
    assert report["parts"]["precision"]["rows"][0]["agree"] == "yes"
    pipeline = report["parts"]["pipeline"]["rows"]
    assert [r["shape"] for r in pipeline] == ["base", "SR"]
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
