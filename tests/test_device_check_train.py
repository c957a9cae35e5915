"""benchmarks/device_check.py at its tiny size, its speed parts (env, train, sampling), in this
process (8 fake CPU devices): each reports finite numbers, and MFU is XLA's FLOPs / (s/step x the
peak given). The other parts: tests/test_device_check.py (two files, so that the suite's two
workers share the compiles)."""

import math

from device_check_report import PEAK, SPEED_PARTS, check_parts

from benchmarks import device_check


def test_device_check_tiny_speed_parts(tmp_path):
    out = str(tmp_path)
    skip = ",".join(p for p in device_check.PARTS if p not in SPEED_PARTS)
    report = device_check.main(["--tiny", "--out", out, "--peak", str(PEAK), "--skip", skip])
    saved = check_parts(out, SPEED_PARTS)
    assert saved["parts"]["env"]["rows"][0]["peak bf16 TFLOP/s"] == PEAK / 1e12
    train = report["parts"]["train"]["rows"]
    assert {r["variant"] for r in train} == {"base", "base, remat=blocks", "SR"}
    for row in train:
        expected = row["GFLOP/step (XLA)"] * 1e9 / (row["s/step"] * PEAK)
        assert math.isclose(row["MFU"], expected, rel_tol=1e-9)
    sampling = report["parts"]["sampling"]["rows"]
    assert [r["model"] for r in sampling] == ["base", "SR"]
    for row in sampling:
        assert math.isclose(row["pairs/s"], row["batch"] / row["sampling s"], rel_tol=1e-9)
