"""One citation style for the book: author-year in the text and in the bibliography.

The text cites author-year ("Ho et al., 2020"), but pybtex's bibliography styles label their
entries with numbers or alphabetic keys. This extension registers:

- a pybtex label style, ``author_year``: each entry's label is its authors' last names ("Kingma
  and Welling", "Ho et al." for three or more) and its year, with a letter after the year where two
  entries would otherwise share a label ("Song et al., 2021a", "Song et al., 2021b");
- a pybtex formatting style, ``author_year``: pybtex's ``unsrt`` entries sorted by author, year
  and title, labelled as above (``bibtex_default_style`` in ``_config.yml``);
- a sphinxcontrib-bibtex referencing style, ``author_year_label``: sphinxcontrib-bibtex's
  ``author_year``, except that a parenthetical citation (``{cite}``, ``{cite:p}``) shows the
  entry's label itself and a textual one (``{cite:t}``) shows the authors and the label's year.
  So the text and the bibliography show the same "Song et al., 2021a", letter included, and every
  citation links to its entry (``bibtex_reference_style`` in ``_config.yml``).
"""

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, List

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import node
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.plugin import register_plugin as register_bibtex_plugin
from sphinxcontrib.bibtex.style.referencing import BaseReferenceStyle, BracketStyle, PersonStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.referencing.basic_author_year import (
    BasicAuthorYearParentheticalReferenceStyle,
    BasicAuthorYearTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.template import entry_label, join, join2, post_text, pre_text, reference


def _plain(rich) -> str:
    return str(rich.render_as("text")) if hasattr(rich, "render_as") else str(rich)


def _last_name(person) -> str:
    """"van den Oord", "LeCun", "Sohl-Dickstein": the von part and the last names, LaTeX undone."""
    parts = [Text.from_latex(part) for part in person.prelast_names + person.last_names]
    return " ".join(_plain(part) for part in parts)


def author_year_label(entry) -> str:
    """The label of one entry, before any letter that tells it from another: "Ho et al., 2020"."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(person) for person in persons]
    if not names:
        authors = _plain(Text.from_latex(entry.fields.get("title", entry.key)))
    elif len(names) == 1:
        authors = names[0]
    elif len(names) == 2:
        authors = f"{names[0]} and {names[1]}"
    else:
        authors = f"{names[0]} et al."
    return f"{authors}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Ho et al., 2020"; entries that would share one get "a", "b", ... in their sorted order."""

    def format_labels(self, sorted_entries):
        sorted_entries = list(sorted_entries)
        labels = [author_year_label(entry) for entry in sorted_entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt entries, sorted by author, year and title, with author-year labels."""

    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


@node
def label_year(children, data) -> Text:
    """The year part of the entry's label, with its letter: "2021a"."""
    assert not children
    return Text(re.split(r",\s*", data["formatted_entry"].label)[-1])


@dataclass
class _LabelParentheticalStyle(BasicAuthorYearParentheticalReferenceStyle):
    def inner(self, role_name: str):
        return join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[pre_text, reference[entry_label], post_text]


@dataclass
class _LabelYearTextualStyle(BasicAuthorYearTextualReferenceStyle):
    def inner(self, role_name: str):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[self.bracket.left,
                 join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[pre_text, reference[label_year], post_text],
                 self.bracket.right],
        ]


@dataclass
class AuthorYearLabelReferenceStyle(AuthorYearReferenceStyle):
    """sphinxcontrib-bibtex's author_year, with the bibliography's labels (letters included) in the text."""

    def __post_init__(self):
        super().__post_init__()
        replaced: List[BaseReferenceStyle] = []
        for style in self.styles:
            if type(style) is BasicAuthorYearParentheticalReferenceStyle:
                style = _LabelParentheticalStyle(bracket=self.bracket_parenthetical, person=self.person,
                                                 author_year_sep=self.author_year_sep,
                                                 pre_text_sep=self.pre_text_sep, post_text_sep=self.post_text_sep)
            elif type(style) is BasicAuthorYearTextualReferenceStyle:
                style = _LabelYearTextualStyle(bracket=self.bracket_textual, person=self.person,
                                               text_reference_sep=self.text_reference_sep,
                                               pre_text_sep=self.pre_text_sep, post_text_sep=self.post_text_sep)
            replaced.append(style)
        self.styles[:] = replaced
        # GroupReferenceStyle maps each role to its style in __post_init__: map them again
        self.role_style.clear()
        for style in self.styles:
            self.role_style.update((role_name, style) for role_name in style.role_names())


def setup(app: Sphinx) -> dict:
    pybtex.plugin.register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    register_bibtex_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_label",
                           AuthorYearLabelReferenceStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
