"""Repair a submitted notebook so that nbgrader can grade it, or say why it cannot be.

Plain ``nbgrader autograde`` trips over what Colab and students really hand in. :func:`sanitize`
compares a submission with the released notebook (``exercises/<assignment>/<notebook>.ipynb``) and

- reads any nbformat 4 (and 3) file and writes nbformat 4.5, giving cells the ids Colab leaves out;
- keeps one cell per nbgrader ``grade_id`` when a cell was copied: for an answer, the last copy
  before its test (the one the student's own run used), for a locked cell the unedited copy; the
  other copies stay in the notebook as ordinary, ungraded cells;
- puts back nbgrader metadata that an editor stripped, by matching the cells to the release: locked
  cells by their text, answer cells by their place between the matched cells and the names they
  define;
- restores deleted test cells and read-only cells from the release, turns a test cell that was
  changed to markdown back into code, and restores edited visible tests (nbgrader would overwrite
  them anyway; here it is reported);
- restores a deleted answer cell as the release's empty stub (that part scores 0, and says so).

What cannot be recovered (a file that is not a notebook, an answer that could be any of several
cells) raises :class:`Unrecoverable` with the reason.
"""

from __future__ import annotations

import ast
import copy
import difflib
import json

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbformat.v4.nbbase import random_cell_id


class Unrecoverable(ValueError):
    """A submission that cannot be graded; the message says why, for the instructor."""


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _grade_id(cell) -> str | None:
    return _meta(cell).get("grade_id")


def _text(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _key(text: str) -> str:
    """Cell text with whitespace differences removed (Colab and editors change trailing newlines)."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _defined_names(text: str) -> set[str]:
    """Top-level functions and classes a code cell defines (empty if it does not parse)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _describe(cell) -> str:
    meta = _meta(cell)
    if meta.get("solution") and meta.get("grade"):
        return "written answer"
    if meta.get("solution"):
        return "answer cell"
    if meta.get("grade"):
        return "test cell"
    return "read-only cell"


def read_notebook(raw: bytes | str, name: str = "notebook") -> nbformat.NotebookNode:
    """Parse a submitted file as a notebook, upgraded to nbformat 4; :class:`Unrecoverable` if it is not one."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise Unrecoverable(f"{name} is not a notebook: it is not text (UTF-8 fails at byte {error.start})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        start = raw.lstrip()[:40].replace("\n", " ")
        raise Unrecoverable(f"{name} is not a notebook: it is not JSON ({error.msg} at line {error.lineno}; "
                            f"it starts {start!r})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise Unrecoverable(f"{name} is not a notebook: JSON without a list of cells")
    try:
        return nbformat.reads(json.dumps(data), as_version=4)
    except Exception as error:  # nbformat raises several kinds for malformed files
        raise Unrecoverable(f"{name} is not a readable notebook: {type(error).__name__}: {error}") from None


def _convert(cell, cell_type: str):
    """The same cell (id, metadata, text) as a ``cell_type`` cell."""
    make = new_code_cell if cell_type == "code" else new_markdown_cell
    new = make(source=_text(cell), metadata=copy.deepcopy(cell.get("metadata", {})))
    new["id"] = cell.get("id") or random_cell_id()
    return new


def _upgrade(notebook, repairs: list[str]) -> None:
    """nbformat 4.5 with unique cell ids."""
    old = (notebook.nbformat, notebook.nbformat_minor)
    seen, added = set(), 0
    for cell in notebook.cells:
        cell_id = cell.get("id")
        if not cell_id or cell_id in seen or not isinstance(cell_id, str) or len(cell_id) > 64:
            cell["id"] = random_cell_id()
            while cell["id"] in seen:
                cell["id"] = random_cell_id()
            added += 1
        seen.add(cell["id"])
    notebook.nbformat, notebook.nbformat_minor = 4, max(notebook.nbformat_minor, 5)
    if old != (4, notebook.nbformat_minor) or added:
        repairs.append(f"upgraded nbformat {old[0]}.{old[1]} to 4.{notebook.nbformat_minor}"
                       + (f" and gave {added} cells ids" if added else ""))


def sanitize(notebook: nbformat.NotebookNode, release: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str], list[str]]:
    """Repair ``notebook`` against ``release``; return it with the repairs made and notes for the
    instructor (facts that are not repairs, e.g. unchanged answers). Raises :class:`Unrecoverable`."""
    notebook = copy.deepcopy(notebook)
    repairs: list[str] = []
    notes: list[str] = []
    _upgrade(notebook, repairs)

    release_cells = list(release.cells)
    release_ids = {_grade_id(cell): cell for cell in release_cells if _grade_id(cell)}
    cells = notebook.cells

    # grade_ids the release does not have (copied from another assignment, or made up)
    for cell in cells:
        grade_id = _grade_id(cell)
        if grade_id and grade_id not in release_ids:
            del cell.metadata["nbgrader"]
            repairs.append(f"removed nbgrader metadata naming '{grade_id}', which this assignment does not have")

    _deduplicate(cells, release_cells, release_ids, repairs)

    # align the submission with the release: cells with a grade_id by it, the others by their text
    present = {_grade_id(cell) for cell in cells if _grade_id(cell)}
    stripped = not present

    def release_key(cell):
        grade_id = _grade_id(cell)
        return f"id:{grade_id}" if grade_id in present else f"text:{_key(_text(cell))}"

    def submission_key(cell):
        grade_id = _grade_id(cell)
        return f"id:{grade_id}" if grade_id else f"text:{_key(_text(cell))}"

    matcher = difflib.SequenceMatcher(None, [release_key(c) for c in release_cells], [submission_key(c) for c in cells],
                                      autojunk=False)
    match = {}  # release index -> submission index
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            match[block.a + k] = block.b + k
    # a release cell with a grade_id that is present is matched by it even where the order changed
    position = {_grade_id(cell): j for j, cell in enumerate(cells) if _grade_id(cell)}
    for i, cell in enumerate(release_cells):
        if _grade_id(cell) in position:
            match[i] = position[_grade_id(cell)]

    used = set(match.values())
    insertions = []  # (insert before this submission index, release index, cell)
    recovered = []
    for i, rcell in enumerate(release_cells):
        grade_id = _grade_id(rcell)
        if not grade_id or grade_id in present:
            continue
        meta = copy.deepcopy(_meta(rcell))
        if i in match and not _grade_id(cells[match[i]]):
            # found by its text: a locked cell (or an untouched answer stub) that lost its metadata
            cells[match[i]].setdefault("metadata", {})["nbgrader"] = meta
            recovered.append(grade_id)
            continue
        before = max((match[k] for k in match if k < i), default=-1)
        after = min((match[k] for k in match if k > i), default=len(cells))
        if meta.get("solution"):
            candidates = [j for j in range(before + 1, after)
                          if j not in used and cells[j].cell_type == rcell.cell_type and not _grade_id(cells[j])]
            if rcell.cell_type == "code" and len(candidates) > 1:
                names = _defined_names(_text(rcell))
                candidates = [j for j in candidates if names and names <= _defined_names(_text(cells[j]))]
            if len(candidates) == 1:
                cells[candidates[0]].setdefault("metadata", {})["nbgrader"] = meta
                used.add(candidates[0])
                match[i] = candidates[0]
                recovered.append(grade_id)
                continue
            if len(candidates) > 1:
                raise Unrecoverable(
                    f"cannot tell which cell is the answer '{grade_id}': its nbgrader metadata is gone and cells "
                    f"{', '.join(str(j + 1) for j in candidates)} could each be it; grade this one by hand")
            insertions.append((after, i, copy.deepcopy(rcell)))
            repairs.append(f"the {_describe(rcell)} '{grade_id}' was missing: put back the release's empty version "
                           f"(it scores 0)")
        else:
            insertions.append((after, i, copy.deepcopy(rcell)))
            repairs.append(f"the {_describe(rcell)} '{grade_id}' was missing: restored it from the release")
    if recovered:
        repairs.append(("the notebook had no nbgrader metadata: " if stripped else "nbgrader metadata was missing: ")
                       + f"recovered it for {len(recovered)} cells by matching them to the release ({', '.join(recovered)})")
    for where, _, rcell in sorted(insertions, key=lambda item: (item[0], item[1]), reverse=True):
        rcell["id"] = random_cell_id()
        cells.insert(where, rcell)
    # each group of cells inserted at one place went in in reverse, which put them back in release order

    # cell types and locked text, against the release
    for j, cell in enumerate(cells):
        grade_id = _grade_id(cell)
        if not grade_id:
            continue
        rcell = release_ids[grade_id]
        if cell.cell_type != rcell.cell_type:
            cells[j] = cell = _convert(cell, rcell.cell_type)
            repairs.append(f"the {_describe(rcell)} '{grade_id}' had been changed to {'markdown' if rcell.cell_type == 'code' else 'code'}: "
                           f"changed it back to {rcell.cell_type}")
        if _meta(rcell).get("locked") and _key(_text(cell)) != _key(_text(rcell)):
            cell.source = _text(rcell)
            repairs.append(f"the {_describe(rcell)} '{grade_id}' had been edited: restored the release's text "
                           "(the original tests are what gets run)")
        cell.metadata["nbgrader"] = {**copy.deepcopy(_meta(rcell)), **{k: v for k, v in _meta(cell).items()
                                                                       if k not in _meta(rcell)}}

    answers = [g for g, c in release_ids.items() if _meta(c).get("solution")]
    unchanged = [_grade_id(c) for c in cells if _grade_id(c) in answers and _key(_text(c)) == _key(_text(release_ids[_grade_id(c)]))]
    if unchanged:
        notes.append(f"{len(unchanged)} of {len(answers)} answers unchanged from the release ({', '.join(unchanged)})")
    known = {_key(_text(c)) for c in release_cells}
    own = sum(1 for c in cells if not _grade_id(c) and _key(_text(c)) not in known and _key(_text(c)))
    if own:
        notes.append(f"{own} {'cell' if own == 1 else 'cells'} of the student's own kept (run, not graded)")
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        raise Unrecoverable(f"the repaired notebook is still not valid nbformat: {error.message}") from None
    return notebook, repairs, notes


def _deduplicate(cells, release_cells, release_ids, repairs) -> None:
    """Keep nbgrader metadata on one cell per grade_id; the other copies become ordinary cells."""
    groups: dict[str, list[int]] = {}
    for j, cell in enumerate(cells):
        if _grade_id(cell):
            groups.setdefault(_grade_id(cell), []).append(j)
    release_order = [_grade_id(c) for c in release_cells if _grade_id(c)]
    for grade_id, copies in groups.items():
        if len(copies) == 1:
            continue
        rcell = release_ids[grade_id]
        if _meta(rcell).get("locked"):
            unedited = [j for j in copies if _key(_text(cells[j])) == _key(_text(rcell))]
            keep = (unedited or copies)[0]
            why = "the unedited copy" if unedited else "the first copy"
        else:
            # the grade cell that follows this answer in the release, if the submission still has it
            following = release_order[release_order.index(grade_id) + 1:]
            test = next((g for g in following if _meta(release_ids[g]).get("grade")), None)
            limit = min(groups.get(test, [len(cells)]))
            before = [j for j in copies if j < limit]
            keep = (before or copies)[-1 if before else 0]
            why = "the last copy before its test" if before else "the first copy"
        for j in copies:
            if j != keep:
                del cells[j].metadata["nbgrader"]
        repairs.append(f"the {_describe(rcell)} '{grade_id}' appeared {len(copies)} times (a copied cell): graded "
                       f"cell {keep + 1}, {why}; the other copies stay as ordinary cells")
