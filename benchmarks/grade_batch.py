"""Time ``coursekit grade`` on a batch of ps1 submissions, one student at a time and several at once.

    python benchmarks/grade_batch.py --jobs 1 2 --extra 5 --out grade_batch.json

The batch is the test suite's fixture zip (every awkward case of tests/test_grade_workflow.py: 20
students) plus ``--extra`` more students with correct or buggy answers. Each run grades the same zip
into a fresh throwaway course. Prints and writes the seconds spent running the notebooks (the part
that runs in parallel), the seconds spent scoring and writing feedback, and the scores, which must
be the same for every ``--jobs``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import nbformat  # noqa: E402

import grading  # noqa: E402
from test_grade_workflow import BUGS, CELL_TIMEOUT, buggy, correct, fixture_submissions  # noqa: E402

from coursekit.grading.workflow import grade  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--extra", type=int, default=5, help="students added to the 20 of the fixture zip")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()

    results = {"machine": platform.platform(), "processor": platform.processor(), "runs": []}
    scores = {}
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as folder:
            course = Path(folder) / "course"
            course.mkdir()
            grading.make_course(course, "ps1")
            path = fixture_submissions(course, Path(folder) / "submissions.zip")
            with zipfile.ZipFile(path, "a") as archive:
                for k in range(args.extra):
                    notebook = correct() if k % 2 == 0 else buggy(BUGS)
                    archive.writestr(f"extra{k:02d}/ps1.ipynb", nbformat.writes(notebook))
            report = grade("ps1", path, course, jobs=jobs, cell_timeout=CELL_TIMEOUT, log=lambda *a: None)
            n = len(report.outcomes)
            run = {"jobs": jobs, "submissions": n, "graded": len(report.graded),
                   "needs_review": len(report.needs_review), "failed": len(report.failed),
                   "run_seconds": round(report.run_seconds, 1), "run_seconds_per_submission": round(report.run_seconds / n, 2),
                   "score_seconds": round(report.score_seconds, 1),
                   "total_seconds_per_submission": round((report.run_seconds + report.score_seconds) / n, 2)}
            results["runs"].append(run)
            scores[jobs] = {o.student: (o.status, o.parts) for o in report.outcomes}
            print(json.dumps(run))
    results["same_scores_for_every_jobs"] = all(s == scores[args.jobs[0]] for s in scores.values())
    print(f"same scores for every --jobs: {results['same_scores_for_every_jobs']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
