"""Serve MathJax 3 from the book's own ``_static`` folder instead of a CDN.

The MathJax files come from the ``django-static-mathjax`` package on PyPI (its ``mathjax``
module carries the MathJax 3 distribution; Django itself is not needed). ``mathjax_path`` in
``_config.yml`` names the entry script relative to ``_static`` (``mathjax/tex-mml-chtml.js``),
and this extension copies the components that script loads into ``_static/mathjax/`` when an
HTML build finishes, so a reader offline sees the same typeset math as a reader online.
"""

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

# Components that tex-mml-chtml.js loads itself (fonts, the menu, accessibility, TeX extensions).
# The other combined builds (SVG output, the "full" bundles) are left out: nothing loads them.
COMPONENTS = ["a11y", "adaptors", "input", "output/chtml", "sre", "ui"]
SCRIPTS = ["core.js", "loader.js", "startup.js", "tex-mml-chtml.js", "tex-chtml.js"]


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax 3 distribution."""
    try:
        import mathjax
    except ImportError as error:
        raise ExtensionError("local_mathjax needs MathJax 3: pip install django-static-mathjax "
                             "(it is in coursekit's book extra)") from error
    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-mml-chtml.js").is_file():
        raise ExtensionError(f"local_mathjax expected MathJax 3's tex-mml-chtml.js in {source}")
    return source


def check_config(app: Sphinx, config) -> None:
    if "://" in config.mathjax_path or config.mathjax_path.startswith("/"):
        raise ExtensionError(f"local_mathjax: mathjax_path must be relative to _static "
                             f"(e.g. mathjax/tex-mml-chtml.js), not {config.mathjax_path!r}")
    mathjax_source()  # fail at the start of the build, not after every notebook has run


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / Path(app.config.mathjax_path).parent
    for name in SCRIPTS:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    for name in COMPONENTS:
        shutil.copytree(source / name, target / name, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", check_config)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
