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


@pytest.mark.slow
def test_built_pages_have_the_book_wide_settings(book_build):
    """The favicon, the course's CSS, no widget manager from a CDN, and one citation style (author-year)."""
    import re

    assert book_build.returncode == 0, book_build.output
    html = book_build.html
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    favicon = Path(config["html"]["favicon"]).name
    assert (html / "_static" / favicon).is_file() and (html / "_static" / "coursekit.css").is_file()
    entries = {}
    references = (html / "book" / "references.html").read_text()
    for anchor, label in re.findall(r'<div class="citation" id="([^"]+)"[^>]*>\s*<span class="label">'
                                    r'<span class="fn-bracket">\[</span>(.*?)<span class="fn-bracket">', references):
        entries[anchor] = label
    assert entries, "no bibliography entries on references.html"
    # "Ho et al., 2020", "Kingma and Welling, 2014", "Song et al., 2021a": author-year, never a number
    assert all(re.fullmatch(r"\D.*, (\d{4}[a-z]?|n\.d\.)", label) for label in entries.values()), entries
    assert len(set(entries.values())) == len(entries), "two bibliography entries share a label"
    citations = 0
    for page in sorted((html / "book").glob("*.html")):
        text = page.read_text()
        assert f'rel="icon" href="../_static/{favicon}"' in text, f"{page.name} links no favicon"
        assert "_static/coursekit.css" in text, f"{page.name} does not load _static/coursekit.css"
        assert "html-manager" not in text and "require.min.js" not in text, f"{page.name} loads a widget manager"
        for anchor, shown in re.findall(r'<a class="reference internal" href="(?:references\.html)?#([^"]+)" '
                                        r'title="[^"]*">(.*?)</a>', text):
            if anchor in entries:
                citations += 1
                assert re.sub(r"<[^>]+>", "", shown) == entries[anchor], (page.name, anchor, shown)
    assert citations >= len(entries), f"{citations} citations for {len(entries)} entries"
