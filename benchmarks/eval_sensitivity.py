"""Does each sample-quality metric see each defect? Real held-out digits scored against real
training digits at a fixed N, clean and corrupted (coursekit.eval.quality.sensitivity_table).

    python benchmarks/eval_sensitivity.py --num-samples 1000 --out benchmarks/eval_sensitivity.json \
        --checkpoint mnist-robust-classifier mnist-classifier   # the new features, and the old ones to compare

Rows: clean (= the real-vs-real floor at this N), Gaussian noise (std 0.1), 3x3 blur, 1/3/10
stray bright pixels, one digit dropped, one digit duplicated in place of another. Columns: FID,
FID over the clean row, KID with its interval, precision, recall (k = 3), the number of images
filed as "not a digit" and the class histogram. Prints the table and writes it, with the command
that produced it, as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time

import torch


def main() -> None:
    from coursekit import __version__
    from coursekit.checkpoint import load_checkpoint
    from coursekit.eval.quality import format_sensitivity_table, sensitivity_table
    from coursekit.eval.robust import ROBUST_CLASSIFIER

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", default=[ROBUST_CLASSIFIER],
                        help="feature extractors (classifier checkpoints), one table each")
    parser.add_argument("--num-samples", type=int, default=1000, help="N: held-out digits and training digits per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--out", default=None, help="write the table here as JSON")
    args = parser.parse_args()

    result = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "coursekit": __version__, "machine": platform.platform(),
              "threads": torch.get_num_threads(), "tables": {}}
    for checkpoint in args.checkpoint:
        start = time.perf_counter()
        table = sensitivity_table(num_samples=args.num_samples, seed=args.seed, classifier=load_checkpoint(checkpoint),
                                  kid_subsets=args.kid_subsets)
        seconds = time.perf_counter() - start
        print(f"features: {checkpoint} ({seconds:.1f} s)")
        print(format_sensitivity_table(table) + "\n", flush=True)
        result["tables"][checkpoint] = {"seconds": round(seconds, 1), **table}
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
