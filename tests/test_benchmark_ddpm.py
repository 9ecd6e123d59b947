"""The coursekit-vs-diffusers DDPM benchmark (benchmarks/ddpm_vs_diffusers.py) end to end, tiny:
a 2-second budget per contestant, N = 20, a 2-step DDIM sampler."""

import json
import math

import torch


def test_benchmark_runs_both_contestants(tmp_path, load_benchmark):
    bench = load_benchmark("ddpm_vs_diffusers")
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread buys nothing and thrashes on a busy machine
    try:
        result = bench.main(["--budget-seconds", "2", "--num-samples", "20", "--samplers", "ddim-2", "--device", "cpu",
                             "--seed", "0", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    written = json.loads(out.read_text())
    assert written["contestants"].keys() == result["contestants"].keys() == {"coursekit", "diffusers"}
    assert written["num_samples"] == written["floor"]["num_samples"] == 20 and written["device"] == "cpu"
    assert math.isfinite(written["floor"]["fid"]) and written["floor"]["fid"] > 0
    for name, record in written["contestants"].items():
        assert record["steps"] > 0, name
        assert record["parameters"] > 0 and record["train_seconds"] >= 2
        assert math.isfinite(record["final_loss"])
        row = record["samplers"]["ddim-2"]
        for key in ("fid", "fid_over_floor", "kid", "precision", "recall", "near_copies", "sampling_seconds"):
            assert math.isfinite(row[key]), (name, key)
        # scored at N = 20, beside the floor at the same N (the one in the header)
        assert row["num_samples"] == row["floor_num_samples"] == 20
        assert row["floor_fid"] == written["floor"]["fid"]
        assert math.isclose(row["fid_over_floor"], row["fid"] / written["floor"]["fid"], rel_tol=1e-9)
        assert 0 <= row["not_a_digit"] <= 20
    assert written["contestants"]["diffusers"]["model"] == "diffusers.UNet2DModel"
    assert "| diffusers |" in written["table"] and "| coursekit |" in written["table"]


def test_variance_probe_samples_with_the_variance_it_names(tmp_path, load_benchmark):
    """benchmarks/ddpm_variance_probe.py, tiny (3 DDPM steps, N = 20): both variances are stored side by
    side, they differ, and fixed_small reproduces what the shipped model's own sampler draws."""
    from coursekit.checkpoint import load_checkpoint
    from coursekit.cli import REFERENCE_SEED
    from coursekit.diffusion import time_sampler
    from coursekit.eval.quality import score_samples

    probe = load_benchmark("ddpm_variance_probe")
    out = tmp_path / "probe.json"
    for variance in ("fixed_large", "fixed_small", "fixed_large"):
        assert probe.main(["--variance", variance, "--steps", "3", "--num-samples", "20", "--out", str(out)]) == 0
    rows = {row["variance_type"]: row for row in json.loads(out.read_text())["rows"]}
    assert len(json.loads(out.read_text())["rows"]) == 2, "measuring a variance again replaces its row"
    assert rows.keys() == {"fixed_small", "fixed_large"}
    assert all(row["sampler"] == "ddpm-3" and row["x0"] == "clip" and row["num_samples"] == 20 for row in rows.values())
    assert rows["fixed_small"]["fid"] != rows["fixed_large"]["fid"]
    images, _ = time_sampler(load_checkpoint("ddpm"), "ddpm", 3, 20, seed=1)
    expected = score_samples(images, pixel_range=(0, 1), num_samples=20, seed=REFERENCE_SEED)
    assert math.isclose(rows["fixed_small"]["fid"], expected["fid"], rel_tol=1e-6)
