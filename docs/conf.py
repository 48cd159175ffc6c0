"""Sphinx configuration: ``python3 -m nox -s docs`` builds docs/ into docs/_build/html.

Sphinx with MyST rather than MkDocs with mkdocstrings: autodoc reads portaconv's docstrings
as they are written (reStructuredText: ``:class:`` roles, ``::`` blocks, simple tables),
where mkdocstrings would want them rewritten in Markdown or another docstring style; MyST
keeps the guides in Markdown all the same. Docstring examples (``>>>``) are run by pytest's
``--doctest-modules`` (in the nox sessions ``tests-numpy`` and ``docs``), so the default nox
run checks them without installing Sphinx.
"""

from __future__ import annotations

import os
import sys

# the checkout's portaconv, even where another copy is installed
sys.path.insert(0, os.path.abspath(".."))

import portaconv  # noqa: E402

project = "portaconv"
author = "the portaconv authors"
copyright = "the portaconv authors"
release = version = portaconv.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
highlight_language = "text"  # an unmarked block is a shell command or output, not Python
myst_heading_anchors = 3  # links to a guide's sections: [text](training.md#resume-rules)

# Each API page asks for its package's members (the names in __all__, documented or not);
# a submodule listed for its docstring alone asks for none.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_preserve_defaults = True
autosummary_generate = False

# Nitpicky (-n) cross-references: names from outside portaconv that the docstrings and
# annotations mention are plain text here, not links (no network is needed to build).
nitpick_ignore_regex = [
    ("py:.*", r"(.*\.)?_\w+"),  # private helpers a docstring names for the reader of the code
    ("py:class", r"IntOrTuple|portaconv\.distributed\.T"),  # type aliases
    ("py:.*", r"(numpy|np|torch|jax|cupy|mpi4py|array_api_strict|functools|os|pathlib)\..*"),
    ("py:.*", r"(Any|Callable|Iterator|Iterable|Mapping|Sequence|TypeVar|T|Path|PathLike)"),
    ("py:.*", r"(collections\.abc|typing)\..*"),
]

html_theme = "furo" if __import__("importlib").util.find_spec("furo") else "alabaster"
html_title = f"portaconv {release}"
