"""Every package's docstring names each of its modules and subpackages, and names no module that is
gone (issue 24: they listed 14 of 28 and omitted swarm).

A module counts as named when the docstring says ``name.py``, ``name/``, quotes it in backticks, or
starts a listing line with it (``    name      what it holds``, ``    a, name   ...``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import selfieless

ROOT = Path(selfieless.__file__).parent
PACKAGES = sorted(p.parent for p in ROOT.rglob("__init__.py"))
# A listing line: indented names (comma-separated, a package with a slash) then two spaces or more.
LISTING = re.compile(r"^ {2,}((?:[a-z_]\w*/?, )*[a-z_]\w*/?) {2,}\S", re.MULTILINE)


def members(package: Path) -> set[str]:
    modules = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    return modules | {p.name for p in package.iterdir() if (p / "__init__.py").exists()}


def docstring(package: Path) -> str:
    return ast.get_docstring(ast.parse((package / "__init__.py").read_text()), clean=False) or ""


def named(doc: str, name: str) -> bool:
    n = re.escape(name)
    return bool(re.search(rf"\b{n}\.py\b|(?<![\w/]){n}/|`{n}`|^ {{2,}}(?:[\w/]+, )*{n}/?(?:,| {{2,}}|$)",
                          doc, re.MULTILINE))


def label(package: Path) -> str:
    return ".".join(package.relative_to(ROOT.parent).parts)


@pytest.mark.parametrize("package", PACKAGES, ids=label)
def test_every_module_is_named_in_its_package_docstring(package):
    doc = docstring(package)
    missing = sorted(m for m in members(package) if not named(doc, m))
    assert not missing, f"{label(package)}'s docstring does not name: {', '.join(missing)}"


@pytest.mark.parametrize("package", PACKAGES, ids=label)
def test_a_package_docstring_names_only_modules_that_exist(package):
    doc, have = docstring(package), members(package)
    said = set(re.findall(r"\b(\w+)\.py\b", doc))
    for line in LISTING.findall(doc):
        said |= {n.rstrip("/") for n in line.split(", ")}
    gone = sorted(said - have)
    assert not gone, f"{label(package)}'s docstring names modules that do not exist: {', '.join(gone)}"


def test_the_rules_see_what_they_should():
    # The check itself, on made-up text: each form counts, a word in a sentence does not.
    doc = "Modules:\n    plan      the plan\n    probing, probe  probes\n    drivers/  how\nsee api.py and `pool`."
    for name in ("plan", "probing", "probe", "drivers", "api", "pool"):
        assert named(doc, name), name
    for name in ("the", "how", "see", "pro", "rivers"):
        assert not named(doc, name), name
    assert named("``config`` (settings)", "config")
    assert {"plan", "probing, probe", "drivers/"} == set(LISTING.findall(doc))
