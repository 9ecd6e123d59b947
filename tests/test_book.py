"""The offline book build: every notebook executed, no warnings, a Colab button, no solutions."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_book_builds_offline_without_warnings(book_build):
    # book_build (tests/conftest.py) runs `jupyter-book build . -W --keep-going` offline, once per test run
    assert book_build.returncode == 0, book_build.output
    html = book_build.html
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
