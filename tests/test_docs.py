"""The documentation site builds with ``mkdocs build --strict`` (every warning fails: a broken link
or anchor, a docstring naming a parameter its function lacks), its command-line page holds every
flag of every subcommand (generated from the parsers by docs/gen_cli.py), its API page documents
``vrnn.fit`` and ``log_prob``, and its getting-started example is the README's, which
tests/test_fit.py executes.

Skips when the docs extra is not installed (``pip install -c constraints.txt -e '.[docs]'``,
or ``make docs``), unless ``VRNN_REQUIRE_DOCS=1``, under which it fails instead.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_PACKAGES = ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material")


def _missing() -> list[str]:
    out = []
    for name in DOCS_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is absent
            found = False
        if not found:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once with --strict into a temporary folder."""
    missing = _missing()
    if missing:
        why = (f"the docs extra is not installed (missing {', '.join(missing)}): "
               f"pip install -c constraints.txt -e '.[docs]'")
        if os.environ.get("VRNN_REQUIRE_DOCS") == "1":
            pytest.fail(f"VRNN_REQUIRE_DOCS=1 and {why}")
        pytest.skip(why)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the theme's end-of-life banner
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def _text(page: Path) -> str:
    """A built page's text, without its tags and with its entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every long option string of ``parser`` and of the subparsers below it."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags(sub)
    return flags


def test_the_site_builds_strictly_with_every_page(site):
    for page in ("index", "models", "data", "estimators", "cli", "api", "RESULTS",
                 "PERFORMANCE", "RELIABILITY"):
        assert (site / f"{page}.html").is_file(), page
    assert not (site / "gen_cli.py").exists()  # the hook is not published as a page's file


def test_the_cli_page_holds_every_flag_of_every_subcommand(site):
    from vrnn.cli import COMMANDS, build_parser

    text = _text(site / "cli.html")
    for name in COMMANDS:
        assert f"usage: vrnn {name}" in text, name
    parsers = [build_parser()]
    if "benchmark" in COMMANDS:  # parses its own arguments
        from vrnn.bench import build_parser as bench_parser

        parsers.append(bench_parser())
    flags = set().union(*(_flags(p) for p in parsers))
    assert {"--estimator", "--posterior", "--objective", "--particles", "--precision",
            "--trust-pickle", "--configs"} <= flags  # the walk reached the subcommands
    missing = sorted(f for f in flags if f not in text)
    assert not missing, f"flags absent from the CLI page: {missing}"


def test_the_api_page_documents_fit_and_log_prob(site):
    page = (site / "api.html").read_text(encoding="utf-8")
    assert 'id="vrnn.fit"' in page
    assert 'id="vrnn.models.base.SequenceModel.log_prob"' in page
    text = _text(site / "api.html")
    assert "log_prob" in text and "fit(" in text
    # the docstrings' Sphinx roles became links or code (docs/griffe_roles.py), not ":func:x"
    assert not re.search(r":(?:func|class|meth|mod|attr|data):[\w~.]", text)


def test_the_getting_started_example_is_the_readmes():
    """docs/index.md's example is the README's "From Python" block, which test_fit executes."""
    def block(path: Path, heading: str) -> str:
        text = path.read_text(encoding="utf-8")
        return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)

    assert block(ROOT / "docs" / "index.md", "## From Python") == \
        block(ROOT / "README.md", "## From Python")


def test_the_tutorials_show_their_code_and_tables(site):
    """Every tutorial page is built with its script's code and its tables included (pymdownx
    snippets), not the ``--8<--`` lines that include them (tests/test_tutorials.py runs the
    scripts): the first line of every included section of the script is on the built page."""
    pages = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
    assert pages
    for page in pages:
        built = site / "tutorials" / f"{page.stem}.html"
        assert built.is_file(), built
        text, source = _text(built), page.read_text(encoding="utf-8")
        assert "--8<--" not in text, f"{built.name}: an inclusion was left as text"
        if re.search(r'--8<-- "docs/tutorials/figures/[\w.-]+\.md"', source):
            assert "<table>" in built.read_text(encoding="utf-8"), f"{built.name}: no table"
        script = (ROOT / "docs" / "tutorials" / f"{page.stem}.py").read_text(encoding="utf-8")
        sections = re.findall(rf'--8<-- "docs/tutorials/{page.stem}\.py:([\w-]+)"', source)
        firsts = [script.split(f"[start:{name}]\n", 1)[1].strip().splitlines()[0].strip()
                  for name in sections] or ["def main("]
        for line in firsts:
            assert line in text, f"{built.name}: the script's {line!r} is not on the page"
