"""Keeps the layering of ``src/vrnn/`` true: each package imports only the packages its row of the
README table ("## How the code is laid out", column ``may import``) names, and itself.

The README is the single source of the rule; this file only reads it. Every ``.py`` file under
``src/vrnn/`` is parsed with :mod:`ast` (nothing is imported) and every import of a ``vrnn``
module counts: ``import vrnn.x.y``, ``from vrnn.x import y``, ``from vrnn import y``, relative
imports (resolved against the file's package), and imports nested in functions, classes,
``try`` or ``if TYPE_CHECKING`` blocks. Imports made from a string at run time
(``importlib.import_module(name)``) are not seen.

- A file belongs to the first directory under ``src/vrnn/`` (its package). The top-level modules
  ``__init__.py`` and ``__main__.py`` may import anything; any other top-level module (``cli.py``)
  needs a row of its own (``cli.py``'s says ``everything``).
- An import's target is the first component after ``vrnn.``. ``from vrnn import name`` targets
  ``name`` when it is a subpackage or top-level module, else the top-level package ``vrnn``
  itself, whose ``__init__`` imports everything, so only the top-level modules may do it.
- Nothing imports ``vrnn.cli`` except ``__main__.py``: the command line is the top.

:func:`check_layout` does the work for the real tree and for a planted tree in ``tmp_path`` that
tests the checker itself.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
README = REPO / "README.md"

ROOT = "vrnn"
"""The top-level package, as a target: importing it runs its ``__init__``, which imports
everything."""
SECTION = "How the code is laid out"
FREE_TOP_LEVEL = frozenset({"__init__.py", "__main__.py"})
"""Top-level modules that may import anything whether or not the table has a row for them."""
HEADER = ("package", "may import")

_NAME = re.compile(r"`([^`]+)`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


class LayoutError(Exception):
    """The README's layout section or table cannot be read."""


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    importer: str
    """The importing file's package, or ``""`` for a top-level module."""
    module: str
    """The importing file, as a top-level name for top-level files (``cli.py``), else ``""``."""
    target: str
    """The first component after ``vrnn.``, or ``vrnn`` for the top-level package itself."""


def parse_layout_table(readme_path: Path) -> dict[str, tuple[str, ...] | None]:
    """``{row name: packages it may import, in the table's order}`` from the README table;
    ``None`` means everything.

    Row names are as written in the table's first column (``host``, ``cli.py``).
    """
    try:
        lines = Path(readme_path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise LayoutError(f"{readme_path}: cannot read the README ({e})") from e
    start = next((i for i, line in enumerate(lines)
                  if re.fullmatch(rf"##\s+{re.escape(SECTION)}\s*", line.strip())), None)
    if start is None:
        raise LayoutError(f"{readme_path}: no section '## {SECTION}' (the layering rule's table "
                          "lives there)")
    section = []
    for line in lines[start + 1:]:
        if re.match(r"#{1,2}\s", line):
            break
        section.append(line)
    rows = [[c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]
            for line in section if line.strip().startswith("|")]
    if not rows:
        raise LayoutError(f"{readme_path}: section '## {SECTION}' has no Markdown table")
    header = [c.lower() for c in rows[0]]
    if any(h not in header for h in HEADER):
        raise LayoutError(f"{readme_path}: the table in '## {SECTION}' needs the columns "
                          f"{' | '.join(HEADER)}; its header is {' | '.join(rows[0])}")
    name_col, allow_col = header.index("package"), header.index("may import")
    table: dict[str, tuple[str, ...] | None] = {}
    for row in rows[1:]:
        if all(set(c) <= set("-: ") for c in row):
            continue  # the |---|---| line
        if len(row) != len(header):
            raise LayoutError(f"{readme_path}: table row has {len(row)} cells, the header "
                              f"{len(header)}: {' | '.join(row)}")
        names = _NAME.findall(row[name_col])
        if len(names) != 1:
            raise LayoutError(f"{readme_path}: table row should name one package in backticks: "
                              f"{row[name_col]!r}")
        name = names[0].strip()
        if name in table:
            raise LayoutError(f"{readme_path}: two rows for `{name}`")
        cell = row[allow_col]
        allowed = [n.strip().removeprefix(f"{ROOT}.") for n in _NAME.findall(cell)]
        if cell.lower().startswith("everything"):
            table[name] = None
        elif allowed:
            table[name] = tuple(allowed)
        elif "standard library" in cell.lower():
            table[name] = ()
        else:
            raise LayoutError(f"{readme_path}: cannot read the 'may import' cell of `{name}`: "
                              f"{cell!r}")
    if not table:
        raise LayoutError(f"{readme_path}: the table in '## {SECTION}' has no rows")
    return table


def _packages(pkg_root: Path) -> list[str]:
    """The package directories directly under ``src/vrnn`` (those holding any ``.py`` file)."""
    return sorted(d.name for d in pkg_root.iterdir()
                  if d.is_dir() and d.name != "__pycache__" and not d.name.startswith(".")
                  and any(d.rglob("*.py")))


def _top_modules(pkg_root: Path) -> list[str]:
    """The top-level modules of ``src/vrnn`` (``cli.py``, ``__init__.py``, ...)."""
    return sorted(p.name for p in pkg_root.glob("*.py"))


def _target(dotted: str) -> str:
    """The package a ``vrnn``-rooted dotted module name lands in: ``vrnn.x.y`` -> ``x``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def collect_imports(src_root: Path) -> tuple[list[Import], list[str]]:
    """Every import of a ``vrnn`` module by a file under ``src_root/vrnn``, and the problems met
    on the way (files that do not parse, relative imports above ``vrnn``)."""
    pkg_root = Path(src_root) / ROOT
    # Names that ``from vrnn import name`` resolves to a module rather than to __init__'s names.
    subs = frozenset(_packages(pkg_root)) | {m.removesuffix(".py") for m in _top_modules(pkg_root)}
    found: list[Import] = []
    problems: list[str] = []
    for path in sorted(pkg_root.rglob("*.py")):
        rel = path.relative_to(pkg_root)
        if "__pycache__" in rel.parts:
            continue
        shown = path.relative_to(Path(src_root).parent)
        importer = rel.parts[0] if len(rel.parts) > 1 else ""
        module = rel.name if len(rel.parts) == 1 else ""
        mod_parts = [ROOT, *rel.with_suffix("").parts]
        # The package relative imports start from: vrnn.train for vrnn/train/loop.py and for
        # vrnn/train/__init__.py alike.
        package_parts = mod_parts[:-1]
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as e:
            problems.append(f"{shown}: cannot parse ({e})")
            continue

        def add(line: int, target: str, _shown=shown, _importer=importer, _module=module):
            found.append(Import(_shown, line, _importer, _module, target))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == ROOT or alias.name.startswith(f"{ROOT}."):
                        add(node.lineno, _target(alias.name))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    keep = len(package_parts) - (node.level - 1)
                    if keep < 1:
                        problems.append(f"{shown}:{node.lineno}: relative import (level "
                                        f"{node.level}) goes above the {ROOT} package")
                        continue
                    base = ".".join(package_parts[:keep])
                    dotted = f"{base}.{node.module}" if node.module else base
                else:
                    dotted = node.module or ""
                if dotted != ROOT and not dotted.startswith(f"{ROOT}."):
                    continue
                if dotted == ROOT:
                    # from vrnn import x: a subpackage or top-level module, or __init__'s names.
                    for alias in node.names:
                        add(node.lineno, alias.name if alias.name in subs else ROOT)
                else:
                    add(node.lineno, _target(dotted))
    found.sort(key=lambda imp: (str(imp.path), imp.line))
    return found, problems


def check_layout(src_root: Path, readme_path: Path) -> list[str]:
    """Every way the tree under ``src_root/vrnn`` breaks the README's layout table, one line each;
    ``[]`` when it keeps it. ``src_root`` is the folder holding the ``vrnn`` package (``src``)."""
    pkg_root = Path(src_root) / ROOT
    if not pkg_root.is_dir():
        return [f"{pkg_root}: no such package folder"]
    try:
        table = parse_layout_table(readme_path)
    except LayoutError as e:
        return [str(e)]
    packages = _packages(pkg_root)
    top_modules = _top_modules(pkg_root)
    known = set(packages) | set(top_modules)
    problems: list[str] = []
    readme = Path(readme_path).name
    for pkg in packages:
        if pkg not in table:
            problems.append(f"{readme}: package `{pkg}` (src/{ROOT}/{pkg}/) has no row in the "
                            f"'{SECTION}' table")
    for mod in top_modules:
        if mod not in FREE_TOP_LEVEL and mod not in table:
            problems.append(f"{readme}: top-level module `{mod}` (src/{ROOT}/{mod}) has no row in "
                            f"the '{SECTION}' table")
    for name, allowed in table.items():
        if name not in known:
            problems.append(f"{readme}: the row `{name}` names no package or module under "
                            f"src/{ROOT}/")
        for other in sorted(allowed or ()):
            if other not in packages:
                problems.append(f"{readme}: the row `{name}` may import `{other}`, which is no "
                                f"package under src/{ROOT}/")

    imports, parse_problems = collect_imports(src_root)
    problems += parse_problems
    seen: set[str] = set()
    for imp in imports:
        if imp.importer:
            owner = imp.importer
        elif imp.module in FREE_TOP_LEVEL:
            continue
        else:
            owner = imp.module
        if imp.target == owner.removesuffix(".py"):
            continue  # a package (or top-level module) may always import itself
        allowed = table.get(owner, ())
        if allowed is None or imp.target in allowed:
            continue
        shown = ", ".join(allowed) or "the standard library only"
        line = f"{imp.path}:{imp.line}: {owner} imports {imp.target} (allowed: {shown})"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def cli_importers(src_root: Path) -> list[str]:
    """Every import of ``vrnn.cli`` under ``src_root/vrnn`` other than ``__main__.py``'s."""
    imports, _ = collect_imports(src_root)
    return [f"{imp.path}:{imp.line}: imports {ROOT}.cli (only __main__.py may)"
            for imp in imports
            if imp.target == "cli" and not (imp.importer == "" and imp.module == "__main__.py")]


def test_layout_follows_readme_table():
    problems = check_layout(SRC, README)
    assert not problems, (
        f"src/{ROOT}/ breaks the layering rule of README.md '## {SECTION}' "
        f"({len(problems)} problem(s)); fix the import, or change the table if the rule should "
        "change:\n" + "\n".join(problems))


def test_nothing_imports_cli():
    offenders = cli_importers(SRC)
    assert not offenders, "the command line is the top; nothing imports it:\n" + "\n".join(
        offenders)


# A planted tree: `low` may import nothing, `high` may import `low`.

PLANTED_README = """\
# fake

## How the code is laid out

Some words.

| package | what it holds | may import |
|---|---|---|
| `low` | the bottom | (the standard library) |
| `high` | the top, with a \\| in it | `low` |
| `cli.py` | the command line | everything (no logic of its own) |

## Next section

| package | what it holds | may import |
|---|---|---|
| `ignored` | not the layout table | `low` |
"""

PLANTED = {
    "vrnn/__init__.py": """\
        from vrnn.high.top import up
        from vrnn.low.core import down
        """,
    "vrnn/__main__.py": """\
        from vrnn.cli import main
        """,
    "vrnn/cli.py": """\
        from vrnn import __version__
        from vrnn.high import top
        """,
    "vrnn/low/__init__.py": """\
        from . import core
        from .core import down
        """,
    "vrnn/low/core.py": """\
        import os
        from vrnn.high.top import up
        from ..high import top
        from vrnn import low
        from vrnn import __version__
        import vrnn.low.helpers


        def down():
            import vrnn.high.top

            return vrnn.high.top.up
        """,
    "vrnn/low/helpers.py": """\
        from .core import down
        """,
    "vrnn/high/__init__.py": """\
        """,
    "vrnn/high/top.py": """\
        from vrnn.low import core
        from ..low.core import down
        from . import __name__ as here
        import vrnn.high


        def up():
            from vrnn.cli import main

            return main
        """,
}


def plant(tmp_path: Path, files: dict[str, str] = PLANTED, readme: str = PLANTED_README):
    src = tmp_path / "src"
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    return src, tmp_path / "README.md"


def test_checker_finds_planted_violations(tmp_path):
    src, readme = plant(tmp_path)
    assert parse_layout_table(readme) == {
        "low": (), "high": ("low",), "cli.py": None}
    assert check_layout(src, readme) == [
        "src/vrnn/high/top.py:8: high imports cli (allowed: low)",
        "src/vrnn/low/core.py:2: low imports high (allowed: the standard library only)",
        "src/vrnn/low/core.py:3: low imports high (allowed: the standard library only)",
        "src/vrnn/low/core.py:5: low imports vrnn (allowed: the standard library only)",
        "src/vrnn/low/core.py:10: low imports high (allowed: the standard library only)",
    ]
    assert cli_importers(src) == ["src/vrnn/high/top.py:8: imports vrnn.cli (only __main__.py may)"]


def test_checker_reports_table_problems(tmp_path):
    files = {**PLANTED, "vrnn/extra/__init__.py": "", "vrnn/tool.py": ""}
    readme = PLANTED_README.replace("`low` |\n", "`low`, `ghost` |\n").replace(
        "| `cli.py`", "| `gone` | nothing | `low` |\n| `cli.py`")
    src, readme_path = plant(tmp_path, files, readme)
    problems = check_layout(src, readme_path)
    assert problems[:5] == [
        "README.md: package `extra` (src/vrnn/extra/) has no row in the "
        "'How the code is laid out' table",
        "README.md: top-level module `tool.py` (src/vrnn/tool.py) has no row in the "
        "'How the code is laid out' table",
        "README.md: the row `high` may import `ghost`, which is no package under src/vrnn/",
        "README.md: the row `gone` names no package or module under src/vrnn/",
        "src/vrnn/high/top.py:8: high imports cli (allowed: low, ghost)",
    ]


def test_checker_needs_the_section_and_table(tmp_path):
    src, readme = plant(tmp_path, readme="# fake\n\n## Something else\n")
    (problem,) = check_layout(src, readme)
    assert "no section '## How the code is laid out'" in problem
    src, readme = plant(tmp_path, readme="# fake\n\n## How the code is laid out\n\nNo table.\n")
    (problem,) = check_layout(src, readme)
    assert "has no Markdown table" in problem


# -- one protocol, no type switches ---------------------------------------------------------------

FAMILY_CLASSES = ("RNN", "VRNN", "SRNN", "DMM", "STORN")


def family_switches(src_root: Path) -> list[str]:
    """Every ``isinstance(..., <family class>)`` and every ``is_latent`` outside
    ``vrnn/models``: code that asks which family it holds instead of asking the protocol."""
    found = []
    for path in sorted((src_root / ROOT).rglob("*.py")):
        rel = path.relative_to(src_root / ROOT)
        if rel.parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance"
                    and len(node.args) == 2):
                kinds = node.args[1]
                names = [getattr(e, "id", getattr(e, "attr", None))
                         for e in (kinds.elts if isinstance(kinds, ast.Tuple) else [kinds])]
                if any(n in FAMILY_CLASSES for n in names):
                    found.append(f"{rel}:{node.lineno}: isinstance on {names}")
            if isinstance(node, ast.Attribute) and node.attr == "is_latent":
                found.append(f"{rel}:{node.lineno}: is_latent")
    return found


def test_nothing_outside_the_models_asks_which_family_it_holds():
    assert family_switches(SRC) == []


def test_the_family_check_finds_a_planted_switch(tmp_path):
    pkg = tmp_path / ROOT / "inference"
    pkg.mkdir(parents=True)
    (pkg / "smc.py").write_text(textwrap.dedent("""\
        from vrnn.models.vrnn import VRNN

        def steps(model):
            if isinstance(model, (VRNN, int)) or not model.is_latent:
                return 1
        """))
    assert family_switches(tmp_path) == [
        "inference/smc.py:4: isinstance on ['VRNN', 'int']", "inference/smc.py:4: is_latent"]


def test_importing_vrnn_leaves_the_slow_optional_modules_unimported():
    """Every `vrnn` command starts with `import vrnn`; scipy.signal (2 to 3 s to import, only for
    resampling audio) and the plotting and MIDI libraries are imported where they are used, not
    at import."""
    import subprocess
    import sys

    slow = ["scipy.signal", "scipy.stats", "matplotlib", "mido", "pretty_midi"]
    code = ("import sys, vrnn, vrnn.cli; "
            f"print([m for m in {slow!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out
