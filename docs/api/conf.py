"""Sphinx configuration of the API reference: every public class, function and parameter, from the docstrings.

Build it with ``sphinx-build -W -b html docs/api build/api`` (``.ci/run`` does, warnings as errors).
"""

from __future__ import annotations

project = "sqla_boss"
author = "sqla_boss developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.intersphinx"]
root_doc = "index"
exclude_patterns: list[str] = []
html_theme = "alabaster"
html_title = "sqla_boss API reference"

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network in CI: cross-references to Python and SQLAlchemy stay plain text rather than links.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# Reading the models' mixin (JobColumns) outside a mapping makes SQLAlchemy warn; harmless here.
import warnings  # noqa: E402

from sqlalchemy.exc import SAWarning  # noqa: E402

warnings.filterwarnings("ignore", category=SAWarning, message="Unmanaged access of declarative attribute")

# Sphinx records the attribute annotations it finds in a class's source into that class's __annotations__,
# SQLAlchemy's DeclarativeBase (whose source declares __mapper_args__ for type checkers) included; a declarative
# class made after that believes it has a __mapper_args__. So every model is made before Sphinx reads a class.
import sqla_boss.migrations  # noqa: E402
import sqla_boss.v46.models  # noqa: E402, F401
