"""The offline book build: every notebook executed, no warnings, a Colab button, no solutions."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_book_builds_offline_without_warnings(tmp_path):
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(tmp_path), "-W", "--keep-going"],
                            capture_output=True, text=True, env={**os.environ, "COURSEKIT_OFFLINE": "1"}, timeout=3000)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    html = tmp_path / "_build" / "html"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config["repository"]["url"].removeprefix("https://github.com/")
    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        page = (html / "book" / f"{notebook.stem}.html").read_text()
        colab = f"https://colab.research.google.com/github/{repository}/blob/main/book/{notebook.name}"
        assert colab in page, f"no Colab launch button on {notebook.name}"
        assert "<img" in page, f"{notebook.name} shows no figure: was it executed?"
        assert "Traceback" not in page, f"{notebook.name} shows a traceback"
    published = [p.relative_to(html).as_posix() for p in html.rglob("*.html")]
    assert not [p for p in published if p.startswith(("solutions/", "exercises/"))]
    for page in html.rglob("*.html"):
        text = page.read_text(errors="ignore")
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, page
    shutil.rmtree(tmp_path / "_build" / "jupyter_execute", ignore_errors=True)
