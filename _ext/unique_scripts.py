"""Write each inline ``<script>`` once per page.

sphinx-thebe (and sphinx-togglebutton) add their inline configuration scripts after the HTML
builder has started, and Sphinx 7 then emits them twice in every page's ``<head>``. The second
``const THEBE_JS_URL = ...`` is a JavaScript error ("Identifier 'THEBE_JS_URL' has already been
declared") on every page. The two copies differ only in their filename (``None`` once, ``""``
the other time), so this drops the repeats, compared by body and attributes, from the page's
script list.
"""

from sphinx.application import Sphinx


def drop_repeated_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        filename = str(getattr(script, "filename", script) or "")
        key = (filename, tuple(sorted((name, str(value)) for name, value in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
