"""The learning curve of the course's diffusion recipe, gathered from the training records of every
run of it (nothing is measured here): FID over the real-vs-real floor, at the same N and seed, for
each sampler and treatment of x0, against training steps.

    python benchmarks/ddpm_learning_curve.py            # writes src/coursekit/checkpoints/ddpm/learning_curve.json
    python benchmarks/ddpm_learning_curve.py --check    # exit 1 if the stored file differs from the records

Chapter 4 reads the JSON (it ships inside the package, so the chapter runs in Colab too). The runs:
``ddpm-eps`` (noise prediction, 100 epochs) and ``ddpm-v-100ep`` (v-prediction, 100 epochs), both
shipped; two longer runs of the v recipe kept in ``benchmarks/`` (160 and 500 epochs, not shipped);
and the shipped ``ddpm``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "src" / "coursekit" / "checkpoints"
RUNS = [  # (name, record) in the order of the table
    ("ddpm-eps", CHECKPOINTS / "ddpm-eps" / "training.json"),
    ("ddpm-v-100ep", CHECKPOINTS / "ddpm-v-100ep" / "training.json"),
    ("v, 160 epochs (benchmarks, not shipped)", ROOT / "benchmarks" / "ddpm_v_160_epochs.training.json"),
    ("v, 500 epochs (benchmarks, not shipped)", ROOT / "benchmarks" / "ddpm_v_500_epochs" / "training.json"),
    ("ddpm", CHECKPOINTS / "ddpm" / "training.json"),
]
OUT = CHECKPOINTS / "ddpm" / "learning_curve.json"


def row(name: str, record: dict) -> dict:
    evaluation = record["metrics"]["evaluation"]
    steps = record.get("steps") or record["epochs"] * 32  # 4,000 digits in batches of 128: 32 steps an epoch
    return {
        "name": name,
        "command": record["command"],
        "prediction_type": "v_prediction" if "--prediction-type v_prediction" in record["command"] else "epsilon",
        "epochs": record["epochs"],
        "steps": steps,
        "train_seconds": record["train_seconds"],
        "device": record["device"],
        "precision": record.get("precision", "float32"),
        "num_samples": evaluation["num_samples"],
        "floor_fid": evaluation["floor"]["fid"],
        "fid_over_floor": {spec: {x0: treated["fid_over_floor"] for x0, treated in rows.items()}
                           for spec, rows in evaluation["samplers"].items()},
    }


def build() -> dict:
    rows = [row(name, json.loads(path.read_text())) for name, path in RUNS]
    # the same floor up to float rounding (the records hold 3.414098 and 3.414099)
    floors = {(r["num_samples"], round(r["floor_fid"], 4)) for r in rows}
    if len(floors) != 1:  # a ratio is only comparable beside the same floor at the same N
        raise SystemExit(f"the records were scored against different floors or N: {sorted(floors)}")
    return {
        "what": "FID / floor of every run of the course's diffusion recipe, copied from their training records "
                "(benchmarks/ddpm_learning_curve.py); all at the same N and floor, x0 clipped ('clip') or not ('none')",
        "num_samples": rows[0]["num_samples"],
        "floor_fid": rows[0]["floor_fid"],
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored file instead of writing it")
    args = parser.parse_args(argv)
    text = json.dumps(build(), indent=2) + "\n"
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is not what the records give: run python benchmarks/ddpm_learning_curve.py")
            return 1
        print(f"{OUT.relative_to(ROOT)} matches the records")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
