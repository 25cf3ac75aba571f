"""The command-line page, generated from ``vrnn``'s own argparse parsers at build time.

An MkDocs hook (``hooks:`` in mkdocs.yml, plain Python, no plugin): in every page that holds the
line ``<!-- vrnn-cli-help -->`` (docs/cli.md), that line is replaced by the ``--help`` of ``vrnn``
and of each of its subcommands, in the order of :data:`vrnn.cli.COMMANDS`, built by
:func:`vrnn.cli.build_parser` (nested subcommands such as ``vrnn data list`` included). A
subcommand that parses its own arguments (``Command(passthrough="module:function")``, such as
``vrnn benchmark``) is shown through that module's ``build_parser()``. A flag added to the code
therefore appears on the site without a hand edit.

Run it directly to see the Markdown it writes: ``.venv/bin/python docs/gen_cli.py [OUT.md]``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys

MARKER = "<!-- vrnn-cli-help -->"
WIDTH = 100
"""Line width of the help text, whatever the terminal that builds the site."""


def _fixed_width(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` formatting its help at :data:`WIDTH` columns (not the terminal's), without
    colour (Python 3.14's argparse colours help written to a terminal)."""
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    if hasattr(parser, "color"):
        parser.color = False
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subparsers of ``parser`` by name, in the order they were added (none: empty)."""
    for action in parser._actions:  # argparse keeps no public list of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _passthrough_parser(target: str) -> argparse.ArgumentParser | None:
    """The parser of a command that parses its own arguments: ``build_parser()`` of the module
    named in ``Command.passthrough`` ("module:function"), or None where it has none."""
    module = importlib.import_module(target.split(":")[0])
    build = getattr(module, "build_parser", None)
    return build() if callable(build) else None


def _section(level: int, title: str, summary: str | None,
             parser: argparse.ArgumentParser | None) -> list[str]:
    lines = [f"{'#' * level} `{title}`", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
    if parser is None:
        lines += [f"This command parses its own arguments: run `{title} --help`.", ""]
    else:
        text = _fixed_width(parser).format_help().rstrip()
        lines += ["```text", text, "```", ""]
    return lines


def _nested(level: int, title: str, parser: argparse.ArgumentParser) -> list[str]:
    """The sections of the subcommands below ``parser`` (``vrnn data list``, ...)."""
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
    lines: list[str] = []
    for name, sub in _subcommands(parser).items():
        lines += _section(level, f"{title} {name}", helps.get(name), sub)
        lines += _nested(level + 1, f"{title} {name}", sub)
    return lines


def cli_markdown() -> str:
    """The Markdown of every ``--help`` of ``vrnn``: a table of the subcommands, then one section
    per subcommand with its usage and flags."""
    from vrnn.cli import COMMANDS, build_parser

    top = build_parser()
    subs = _subcommands(top)
    lines = ["| command | what it does |", "|---|---|"]
    for name, cmd in COMMANDS.items():
        summary = cmd.help.replace("|", "\\|")  # a table cell
        lines.append(f"| [`vrnn {name}`](#vrnn-{name}) | {summary} |")
    lines += [""] + _section(2, "vrnn", None, top)
    for name, cmd in COMMANDS.items():
        parser = _passthrough_parser(cmd.passthrough) if cmd.passthrough else subs[name]
        lines += _section(2, f"vrnn {name}", cmd.help, parser)
        if parser is not None:
            lines += _nested(3, f"vrnn {name}", parser)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    """MkDocs hook: the marker line of a page becomes :func:`cli_markdown`."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())


if __name__ == "__main__":
    out = cli_markdown() + "\n"
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
