"""The repository's conventions: config, environment, notebooks, README and CI agree."""

import json
import re
import tomllib
from pathlib import Path

import pytest
import nbformat
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted(p for folder in ("book", "solutions", "exercises") for p in (ROOT / folder).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def _normalise(requirement: str) -> tuple[str, str]:
    parsed = Requirement(requirement)
    return parsed.name.lower().replace("_", "-"), str(parsed.specifier)


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["book"] + project["optional-dependencies"]["test"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    listed = [entry for entry in pip_section if not entry.startswith("-")]
    assert sorted(map(_normalise, listed)) == sorted(map(_normalise, wanted))
    assert "-e ." in pip_section  # the package itself
    # the grade, cluster and distributed-training extras add nothing that the book and test extras do
    # not already install (so the suite tests them)
    for extra in ("grade", "cluster", "distributed-training"):
        assert set(map(_normalise, project["optional-dependencies"][extra])) <= set(map(_normalise, wanted)), extra


def test_book_config_has_the_decided_settings():
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["repository"]["path_to_book"] == ""
    assert CONFIG["execute"]["raise_on_error"] is True
    assert CONFIG["execute"]["execute_notebooks"] == "force"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", CONFIG["repository"]["url"])
    assert all((ROOT / bib).is_file() for bib in CONFIG["bibtex_bibfiles"])


def test_toc_lists_every_chapter_and_only_book_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    assert all(name.startswith("book/") for name in files)
    chapters = {f"book/{p.stem}" for p in (ROOT / "book").glob("*.ipynb")}
    assert chapters <= set(files), chapters - set(files)
    for name in files:
        assert (ROOT / f"{name}.ipynb").exists() or (ROOT / f"{name}.md").exists(), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_are_stored_without_outputs(path):
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "clear outputs before committing"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_code_cell_installs_coursekit_in_colab_only(path):
    notebook = json.loads(path.read_text())
    first = "".join(next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"])
    assert 'if "google.colab" in sys.modules:' in first
    urls = re.findall(r"git\+(https://[^\s\"']+)", first)
    assert urls == [CONFIG["repository"]["url"]], f"install cell must use the canonical URL, found {urls}"
    assert "get_device()" in first


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book: setup", makefile, re.M) and re.search(r"^test: setup", makefile, re.M)
    url = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    for link in re.findall(r"colab\.research\.google\.com/github/([^)\s]+)", readme):
        owner_repo, _, path = link.partition("/blob/main/")
        assert owner_repo == url and (ROOT / path).is_file(), link


def test_wheel_ships_every_checkpoint(tmp_path):
    """Colab installs coursekit from git: the built wheel must carry the checkpoints."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("coursekit-*.whl"))).namelist())
    checkpoints = ROOT / "src" / "coursekit" / "checkpoints"
    # every file of every checkpoint, including the nested folders of a pipeline (unet/, vae/, tokenizer/, ...)
    files = [path.relative_to(checkpoints).as_posix() for path in checkpoints.rglob("*")
             if path.is_file() and "__pycache__" not in path.parts]
    assert any(file.endswith("/model.safetensors") for file in files)
    missing = [file for file in files if f"coursekit/checkpoints/{file}" not in names]
    assert not missing, f"not in the wheel (add a glob to [tool.setuptools.package-data]): {missing}"


def test_every_chapter_with_an_exercise_set_links_it_in_colab():
    """Chapters 1-6 each name their exercise set; the name must come with a Colab link to the release."""
    url = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    for number in range(1, 7):
        chapter = next((ROOT / "book").glob(f"0{number}_*.ipynb"))
        text = "\n".join(cell.source for cell in nbformat.read(chapter, as_version=4).cells if cell.cell_type == "markdown")
        links = re.findall(r"colab\.research\.google\.com/github/([^)\s]+)", text)
        wanted = f"{url}/blob/main/exercises/ps{number}/ps{number}.ipynb"
        assert wanted in links, f"{chapter.name} does not link exercise set ps{number} in Colab"
        assert (ROOT / "exercises" / f"ps{number}" / f"ps{number}.ipynb").is_file()


def _colab_links(text: str) -> list[str]:
    return re.findall(r"colab\.research\.google\.com/github/([^)\s]+)", text)


def test_home_page_links_every_chapter_and_exercise_set_in_colab():
    """book/index.md lists the chapters and every exercise set under exercises/, each with its Colab link."""
    url = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    home = (ROOT / "book" / "index.md").read_text()
    links = _colab_links(home)
    sets = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "exercises").glob("ps*/ps*.ipynb")
                  if path.stem == path.parent.name)
    assert len(sets) >= 6, sets
    for release in sets:
        assert f"{url}/blob/main/{release}" in links, f"the home page does not link {release} in Colab"
    for chapter in sorted((ROOT / "book").glob("0*.ipynb")):
        assert f"{url}/blob/main/book/{chapter.name}" in links, f"the home page does not link {chapter.name} in Colab"
        assert f"<{chapter.stem}>`" in home, f"the home page does not link {chapter.name} in the book"
    for link in links:
        owner_repo, _, path = link.partition("/blob/main/")
        assert owner_repo == url and (ROOT / path).is_file(), link


def _bash_lines(markdown: str) -> list[str]:
    """The command lines of a markdown text's ```bash blocks, each without its comment and extra spaces."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.splitlines():
            command = " ".join(line.split("#", 1)[0].split()) if not line.lstrip().startswith("#") else ""
            if command:
                lines.append(command)
    return lines


def test_instructor_guide_shows_the_instructor_commands():
    """The guide holds the set-up and grading commands itself (not a pointer to the README), and they are real."""
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "book" / "instructor_guide.md").read_text()
    assert "README" not in guide.replace("README.txt", ""), "the guide sends readers to the README"
    quick_start = readme.split("## Instructor quick start", 1)[1]
    readme_commands = _bash_lines(quick_start)
    readme_commands += [line for line in _bash_lines(readme) if line.startswith("coursekit grade")]
    guide_commands = _bash_lines(guide)
    assert readme_commands and "coursekit grade ps1 ~/Downloads/ps1-submissions.zip" in readme_commands
    missing = [command for command in readme_commands if command not in guide_commands]
    assert missing == [], f"the README gives instructors these commands and the guide does not: {missing}"
    for command in ("make exercises", "nbgrader generate_assignment ps1 --force", "nbgrader export --to grades-final.csv"):
        assert command in guide_commands, command
    # every make target the guide runs exists, and every option of `coursekit grade` it shows is real
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"\bmake (\w+)", "\n".join(guide_commands)):
        assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"
    grade_help = subprocess.run([sys.executable, "-m", "coursekit.cli", "grade", "--help"], capture_output=True,
                                text=True, check=True).stdout
    shown = set(re.findall(r"(--[a-z][a-z-]*)", "\n".join(c for c in guide_commands if c.startswith("coursekit grade"))))
    shown |= set(re.findall(r"^\| `(--[a-z][a-z-]*)", guide, re.M))  # the options table
    assert shown and not [option for option in shown if option not in grade_help], shown
    url = CONFIG["repository"]["url"]
    assert f"git clone {url}" in guide
    for number in range(1, 7):
        wanted = f"{url.removeprefix('https://github.com/')}/blob/main/exercises/ps{number}/ps{number}.ipynb"
        assert wanted in _colab_links(guide), f"the guide does not link ps{number} in Colab"


def test_favicon_is_what_the_script_draws():
    """_static/favicon.png, the book's favicon (html.favicon), is the picture that _ext/make_favicon.py draws."""
    import importlib.util

    from PIL import Image

    assert CONFIG["html"]["favicon"] == "_static/favicon.png"
    spec = importlib.util.spec_from_file_location("make_favicon", ROOT / "_ext" / "make_favicon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = module.draw()
    with Image.open(ROOT / CONFIG["html"]["favicon"]) as committed:
        assert committed.size == drawn.size == (64, 64)
        assert committed.convert("RGB").tobytes() == drawn.tobytes(), \
            "run `python _ext/make_favicon.py` and commit _static/favicon.png"


def test_bibliography_labels_are_author_year_and_unique():
    """The label style of _ext/author_year_bibliography.py on references.bib: "Ho et al., 2020", letters where needed."""
    import sys

    from pybtex.database import parse_file

    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        import author_year_bibliography as style
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    entries = parse_file(ROOT / "references.bib").entries
    ordered = list(entries.values())
    labels = dict(zip((entry.key for entry in ordered), style.AuthorYearLabelStyle().format_labels(ordered)))
    assert labels["ho2020denoising"] == "Ho et al., 2020"
    assert labels["kingma2014autoencoding"] == "Kingma and Welling, 2014"
    assert len(set(labels.values())) == len(labels), "two entries share a label"
    assert all(re.fullmatch(r"\D.*, \d{4}[a-z]?", label) for label in labels.values()), labels
    assert CONFIG["sphinx"]["config"]["bibtex_default_style"] == "author_year"
    assert "author_year_bibliography" in CONFIG["sphinx"]["local_extensions"]
    assert ":style:" not in (ROOT / "book" / "references.md").read_text()  # the default style, author-year
