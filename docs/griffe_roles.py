"""A griffe extension for the API pages: the docstrings' Sphinx roles as cross-references.

The docstrings of vrnn are Google-style (``Args:``, ``Returns:``) with reST roles such as
``:func:`vrnn.fit``` or ``:class:`~vrnn.inference.likelihood.LogProb```, which Markdown would
print as they stand (":func:" and all). Loaded by mkdocstrings (``extensions:`` in mkdocs.yml),
this turns each role into an *optional* autorefs cross-reference: a link where its target is
rendered on the site, plain code where it is not (another module, ``torch.autocast``), never a
warning. A target is resolved as Python would from the object whose docstring holds it (a bare
``LogProb`` in ``vrnn``'s docstring is ``vrnn.inference.likelihood.LogProb``); ``~`` shows its
last name only, as in Sphinx. Roles inside code (indented blocks, fences) are left alone.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|obj|exc|const|type):`([^`]+)`")
FENCE = re.compile(r"^\s*(```|~~~)")


def _canonical(pkg: griffe.Module, path: str) -> str:
    """Where ``path`` is defined (``vrnn.LogProb`` is ``vrnn.inference.likelihood.LogProb``),
    which the rendered pages register beside the path they render it under."""
    head, _, rest = path.partition(".")
    if head != pkg.name or not rest:
        return path
    try:
        return pkg[rest].canonical_path
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path


def _identifier(pkg: griffe.Module, obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj`` (itself when it cannot be resolved)."""
    if target.startswith(pkg.name + "."):
        return _canonical(pkg, target)
    head, _, rest = target.lstrip(".").partition(".")
    for scope in (obj, obj.parent):
        if scope is None:
            continue
        try:
            resolved = scope.resolve(head)
        except (griffe.NameResolutionError, KeyError, AttributeError):
            continue
        return _canonical(pkg, f"{resolved}.{rest}" if rest else resolved)
    if obj.is_module:  # a method named in its module's docstring: of the class that has it
        for member in obj.members.values():
            if not member.is_alias and member.is_class and head in member.members:
                return _canonical(pkg, f"{member.path}.{target.lstrip('.')}")
    return target


def _reference(pkg: griffe.Module, obj: griffe.Object, match: re.Match) -> str:
    target = match.group(1).strip()
    short = target.startswith("~")
    target = target.lstrip("~")
    title = target.rsplit(".", 1)[-1] if short else target
    identifier = html.escape(_identifier(pkg, obj, target), quote=True)
    code = f"<code>{html.escape(title)}</code>"
    return f'<autoref identifier="{identifier}" optional>{code}</autoref>'


def convert(pkg: griffe.Module, obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring) with its roles outside code blocks turned into cross-references."""
    out, in_fence, in_code, previous_blank = [], False, False, True
    for line in text.split("\n"):
        blank = not line.strip()
        if FENCE.match(line):
            in_fence = not in_fence
        elif not blank:
            # Markdown: a line indented by 4 after a blank line (or after such a line) is code
            in_code = (len(line) - len(line.lstrip(" ")) >= 4) and (previous_blank or in_code)
        if not (in_fence or in_code or blank):
            line = ROLE.sub(lambda m: _reference(pkg, obj, m), line)
        out.append(line)
        previous_blank = blank
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring once the package is loaded (names then resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = convert(pkg, obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
