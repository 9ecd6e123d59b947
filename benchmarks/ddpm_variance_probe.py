"""Does DDPM with 1,000 steps need more fresh noise? The shipped ``ddpm`` sampled with the reverse
variance beta_t (diffusers' ``variance_type="fixed_large"``) instead of the posterior's beta-tilde
(``"fixed_small"``, the course's and diffusers' default), scored exactly as ``coursekit evaluate``
scores its rows: the same N, sampling seed, reference and floor, so the result sits beside the record's
``ddpm-1000`` rows.

    python benchmarks/ddpm_variance_probe.py                          # fixed_large, x0 clipped
    python benchmarks/ddpm_variance_probe.py --variance fixed_small   # reproduces the record's row

Writes ``src/coursekit/checkpoints/ddpm/variance_probe.json`` (one entry per variance and x0 treatment,
replaced when measured again), which chapter 4 reads: it ships inside the package, beside the learning
curve, so the chapter runs in Colab too. About 27 minutes on 2 CPU cores for N = 1,000.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "src" / "coursekit" / "checkpoints" / "ddpm" / "variance_probe.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="ddpm")
    parser.add_argument("--variance", choices=("fixed_small", "fixed_large"), default="fixed_large")
    parser.add_argument("--x0", choices=("clip", "none"), default="clip")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1, help="sampling seed (coursekit evaluate's default: 1)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    from coursekit.checkpoint import load_checkpoint
    from coursekit.cli import REFERENCE_SEED, evaluation_header, quality_row
    from coursekit.diffusion import time_sampler
    from coursekit.eval.quality import memorisation_report, score_samples

    model = load_checkpoint(args.checkpoint)
    model.eval()
    default_scheduler = model.scheduler

    def scheduler(kind="ddim", **kwargs):
        made = default_scheduler(kind, **kwargs)
        made.variance_type = args.variance  # read by DDPMScheduler.posterior_variance at every step
        return made

    model.scheduler = scheduler
    images, seconds = time_sampler(model, "ddpm", args.steps, args.num_samples, seed=args.seed, clip=args.x0 == "clip")
    scores = score_samples(images, pixel_range=(0, 1), num_samples=args.num_samples, seed=REFERENCE_SEED)
    memorisation = memorisation_report(images, pixel_range=(0, 1), num_samples=args.num_samples, seed=REFERENCE_SEED)
    row = quality_row(scores, memorisation, seconds)
    print(f"ddpm-{args.steps} variance {args.variance} x0 {args.x0}: FID {row['fid']:.3f} "
          f"({row['fid_over_floor']:.3f}x the floor) P {row['precision']:.3f} R {row['recall']:.3f} {seconds:.0f} s")

    stored = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    key = {"checkpoint": args.checkpoint, "sampler": f"ddpm-{args.steps}", "variance_type": args.variance,
           "x0": args.x0}
    stored["rows"] = [r for r in stored["rows"] if {k: r.get(k) for k in key} != key]
    stored["rows"].append({**key, **evaluation_header(args.num_samples, args.seed), **row,
                           "command": "python benchmarks/ddpm_variance_probe.py " + " ".join(argv or sys.argv[1:]),
                           "device": "cpu", "threads": torch.get_num_threads(), "machine": platform.machine(),
                           "date": datetime.date.today().isoformat()})
    args.out.write_text(json.dumps(stored, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
