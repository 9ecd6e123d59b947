"""Seconds per submission of ``coursekit grade``: local processes against a dask LocalCluster.

    python benchmarks/grade_cluster.py --submissions 40 --workers 2 --out benchmarks/grade_cluster.json

One batch of ``--submissions`` ps1 notebooks (correct and buggy answers in turn) is graded twice into
fresh throwaway courses: with ``--jobs W`` local processes (today's default) and with ``--cluster
local``, a dask ``LocalCluster`` of W single-threaded workers. Both must give the same scores. For each
it records the seconds spent running the notebooks (the part that spreads over processes or machines)
and scoring them into the gradebook with feedback (the part that stays with the coordinator, one
student after another).

From those measurements it works out, on paper, how the design spreads to N machines: with t_run the
measured worker-seconds of one submission's run (wall-clock run seconds x workers / submissions) and t_score the
coordinator's seconds per submission, a batch of S submissions on N machines of c workers takes about
S * t_run / (N * c) + S * t_score, so the coordinator's serial share S * t_score is the floor that more
machines cannot lower (scoring could overlap the runs; it does not today).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import nbformat  # noqa: E402

import grading  # noqa: E402
from test_grade_workflow import BUGS, CELL_TIMEOUT, buggy, correct  # noqa: E402

from coursekit.grading.workflow import grade  # noqa: E402


def batch(folder: Path, count: int) -> Path:
    for k in range(count):
        notebook = correct() if k % 2 == 0 else buggy(BUGS)
        (folder / f"student{k:03d}").mkdir(parents=True)
        nbformat.write(notebook, os.fspath(folder / f"student{k:03d}" / "ps1.ipynb"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="machine counts for the on-paper projection")
    parser.add_argument("--term", type=int, default=2100, help="submissions in the projected batch (300 students x 7 sets)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    results = {"note": "measured on the machine as it was (its load average is recorded): other jobs shared "
                       "the cores, so the seconds are upper bounds for an idle machine",
               "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "date": datetime.date.today().isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
               "assignment": "ps1", "cell_timeout": CELL_TIMEOUT, "load_average_before": os.getloadavg(), "runs": []}
    scores = {}
    with tempfile.TemporaryDirectory() as root:
        submissions = batch(Path(root) / "submissions", args.submissions)
        for mode in ("local", "cluster"):
            course = Path(root) / f"course-{mode}"
            course.mkdir()
            grading.make_course(course, "ps1")
            options = {"jobs": args.workers} if mode == "local" else {"jobs": args.workers, "cluster": "local"}
            report = grade("ps1", submissions, course, cell_timeout=CELL_TIMEOUT, feedback=True,
                           log=lambda *a: None, **options)
            n = len(report.outcomes)
            run = {"mode": f"--jobs {args.workers}" if mode == "local" else f"--cluster local ({args.workers} workers)",
                   "submissions": n, "graded": len(report.graded), "needs_review": len(report.needs_review),
                   "failed": len(report.failed), "run_seconds": round(report.run_seconds, 1),
                   "score_seconds": round(report.score_seconds, 1),
                   "seconds_per_submission": round((report.run_seconds + report.score_seconds) / n, 2),
                   "run_worker_seconds_per_submission": round(report.run_seconds * args.workers / n, 2),
                   "score_seconds_per_submission": round(report.score_seconds / n, 3)}
            results["runs"].append(run)
            scores[mode] = {o.student: (o.status, o.parts) for o in report.outcomes}
            run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(run), flush=True)
    results["same_scores"] = scores["local"] == scores["cluster"]
    cluster = results["runs"][1]
    t_run, t_score = cluster["run_worker_seconds_per_submission"], cluster["score_seconds_per_submission"]
    results["projection"] = {
        "model": "S * t_run / (N * c) + S * t_score, from the cluster run's measured t_run and t_score",
        "S": args.term, "c": args.workers, "t_run": t_run, "t_score": t_score,
        "hours": {str(n): round((args.term * t_run / (n * args.workers) + args.term * t_score) / 3600, 2)
                  for n in args.machines},
        "coordinator_floor_hours": round(args.term * t_score / 3600, 2),
    }
    print(json.dumps(results["projection"], indent=1))
    print(f"same scores: {results['same_scores']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
