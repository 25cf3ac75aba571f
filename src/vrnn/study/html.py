"""A Markdown report and the files it names -> one self-contained ``report.html``.

The reports of ``vrnn demo`` and ``vrnn reproduce`` are Markdown with pictures and sounds beside
them. :func:`write_html` turns one into a page a person opens in a browser: every picture inlined
as a ``data:`` URI, every WAV file it links given an ``<audio controls>`` player with the sound
inlined, MIDI files (and anything else) linked relative to the page, pipe tables as HTML tables.
The page works when copied alone, except for the linked files.

The converter covers the subset of Markdown our reports use: ATX headings, paragraphs, pipe tables
(with ``:`` alignment), images, links, bullet and numbered lists, fenced code blocks, ``**bold**``,
``*emphasis*``, inline code, HTML comments (dropped). Every piece of text is escaped; raw HTML in
the Markdown is shown as text, never passed through. Links with a scheme other than http(s),
mailto or none are shown as text.

Inlined files together stay under ``max_bytes`` (about 20 MB by default): a file that would pass it
is linked instead, and the page says so at the top; nothing is shortened or resampled.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from urllib.parse import unquote

from vrnn.host.files import write_text

MAX_BYTES = 20 * 2**20
"""Default cap on the inlined files' encoded size (base64, bytes), about 20 MB."""

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".svg": "image/svg+xml", ".webp": "image/webp", ".wav": "audio/wav"}
AUDIO = (".wav",)
MIDI = (".mid", ".midi")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       background: #f6f7f9; color: #1d2330; line-height: 1.5; }
main { max-width: 1000px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff;
       min-height: 100vh; box-shadow: 0 0 12px rgba(0,0,0,.06); }
h1 { font-size: 1.6rem; margin-top: .5rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #e3e6ea; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .92rem; }
th, td { border: 1px solid #d7dbe0; padding: .3rem .6rem; }
th { background: #eef1f5; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: .8rem 0; }
pre { background: #f1f3f6; padding: .8rem; overflow-x: auto; font-size: .85rem; }
code { background: #f1f3f6; padding: 0 .2rem; border-radius: 3px; }
pre code { background: none; padding: 0; }
li:has(> .player) { display: flex; flex-wrap: wrap; align-items: center; gap: .2rem 1rem;
                    margin: .4rem 0; }
.player { display: inline-flex; flex-direction: column; vertical-align: top; font-size: .8rem; }
.player audio { width: 220px; height: 36px; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: .5rem .8rem; }
"""


class _Inliner:
    """Turns files the report names into ``data:`` URIs while the budget lasts."""

    def __init__(self, base: Path, max_bytes: int, page_dir: Path | None = None):
        self.base, self.left = base, max_bytes
        self.page_dir = page_dir  # where the page will be; relative links are rebased onto it
        self.linked: list[str] = []  # files linked because the budget was spent
        self.missing: list[str] = []

    def local(self, ref: str) -> Path | None:
        """The file a relative reference names, or None (absent, or not relative)."""
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", ref) or ref.startswith(("/", "#")):
            return None
        path = self.base / unquote(ref.split("#")[0])
        return path if path.is_file() else None

    def href(self, ref: str) -> str:
        """A relative reference as seen from the page's folder (unchanged when the page sits in
        ``base``, or for absolute references and anchors)."""
        if (self.page_dir is None or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", ref)
                or ref.startswith(("/", "#"))):
            return ref
        if self.base.resolve() == self.page_dir.resolve():
            return ref
        target = os.path.relpath(self.base.resolve() / ref, self.page_dir.resolve())
        return Path(target).as_posix()

    def data_uri(self, ref: str) -> str | None:
        path = self.local(ref)
        if path is None:
            self.missing.append(ref)
            return None
        mime = MIME.get(path.suffix.lower())
        if mime is None:
            return None
        size = 4 * ((path.stat().st_size + 2) // 3)  # base64's length
        if size > self.left:
            self.linked.append(ref)
            return None
        self.left -= size
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _safe_href(href: str) -> str | None:
    """The link if its scheme is harmless (none, http, https, mailto), else None."""
    m = re.match(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):", href)
    if m and m.group(1).lower() not in ("http", "https", "mailto"):
        return None
    return href.strip()


_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|!\[(?P<img_alt>[^\]]*)\]\((?P<img_src>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
    r"|\[(?P<link_text>[^\]]+)\]\((?P<link_href>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\s][^*]*?)\*(?![\w*])"
    r"|<(?P<autolink>https?://[^>\s]+)>")


def _inline(text: str, inliner: _Inliner) -> str:
    """One line or paragraph of Markdown text -> HTML, every literal piece escaped."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        pos = m.end()
        if m.group("code") is not None:
            out.append(f"<code>{html.escape(m.group('code_text').strip())}</code>")
        elif m.group("img_src") is not None:
            out.append(_image(m.group("img_alt"), m.group("img_src"), inliner))
        elif m.group("link_href") is not None:
            out.append(_link(m.group("link_text"), m.group("link_href"), inliner))
        elif m.group("bold") is not None:
            out.append(f"<strong>{_inline(m.group('bold'), inliner)}</strong>")
        elif m.group("em") is not None:
            out.append(f"<em>{_inline(m.group('em'), inliner)}</em>")
        else:
            url = html.escape(m.group("autolink"), quote=True)
            out.append(f'<a href="{url}">{url}</a>')
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _image(alt: str, src: str, inliner: _Inliner) -> str:
    uri = inliner.data_uri(src)
    alt_q = html.escape(alt, quote=True)
    if uri is not None:
        return f'<img src="{uri}" alt="{alt_q}">'
    href = _safe_href(src)
    if href is None:
        return html.escape(f"![{alt}]({src})")
    return f'<img src="{html.escape(inliner.href(href), quote=True)}" alt="{alt_q}">'


def _link(text: str, href: str, inliner: _Inliner) -> str:
    safe = _safe_href(href)
    if safe is None:
        return html.escape(f"[{text}]({href})")
    label = _inline(text, inliner)
    suffix = Path(unquote(safe.split("#")[0])).suffix.lower()
    href_q = html.escape(inliner.href(safe), quote=True)
    if suffix in AUDIO:
        uri = inliner.data_uri(safe)
        src = uri if uri is not None else href_q
        return (f'<span class="player"><a href="{href_q}">{label}</a>'
                f'<audio controls preload="auto" src="{src}"></audio></span>')
    if suffix in MIDI:
        return f'<a href="{href_q}" type="audio/midi" download>{label}</a>'
    return f'<a href="{href_q}">{label}</a>'


def _split_row(line: str) -> list[str]:
    """A pipe-table row -> its cells (``\\|`` and pipes inside backticks stay in the cell)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells, cur, tick = [], [], False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if c == "`":
            tick = not tick
        if c == "|" and not tick:
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$")


def _table(lines: list[str], inliner: _Inliner) -> str:
    head = _split_row(lines[0])
    aligns = []
    for spec in _split_row(lines[1]):
        left, right = spec.startswith(":"), spec.endswith(":")
        aligns.append("center" if left and right else "right" if right else
                      "left" if left else None)

    def cell(tag: str, text: str, j: int) -> str:
        a = aligns[j] if j < len(aligns) else None
        style = f' style="text-align:{a}"' if a else ""
        return f"<{tag}{style}>{_inline(text, inliner)}</{tag}>"

    rows = ["<thead><tr>" + "".join(cell("th", c, j) for j, c in enumerate(head))
            + "</tr></thead><tbody>"]
    for line in lines[2:]:
        cells = _split_row(line)
        cells += [""] * (len(head) - len(cells))
        rows.append("<tr>" + "".join(cell("td", c, j) for j, c in enumerate(cells[:len(head)]))
                    + "</tr>")
    return "<table>" + "\n".join(rows) + "</tbody></table>"


def _slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


_LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$")


def markdown_to_html(text: str, base: Path, *, max_bytes: int = MAX_BYTES,
                     page_dir: Path | None = None) -> tuple[str, dict]:
    """Convert Markdown to an HTML fragment, inlining the files it names.

    Args:
        text: the Markdown.
        base: the folder relative references are read from (the report's folder).
        max_bytes: cap on the inlined files' encoded size, in bytes.
        page_dir: the folder the page will be written to, when not ``base``: the relative
            links left in the page (MIDI files, files over the cap) are rewritten to work there.

    Returns:
        ``(html, notes)``: the fragment, and ``{"linked": [...], "missing": [...]}``, the files
        linked because the cap was reached and the local references that name no file.
    """
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    lines = text.splitlines()
    inliner = _Inliner(base, max_bytes, page_dir)
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(s.strip() for s in para), inliner) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            lang = stripped[3:].strip()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            cls = f' class="language-{html.escape(lang, quote=True)}"' if lang else ""
            out.append(f"<pre><code{cls}>" + html.escape("\n".join(body)) + "</code></pre>")
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            flush()
            n, title = len(m.group(1)), m.group(2)
            out.append(f'<h{n} id="{html.escape(_slug(title), quote=True)}">'
                       f"{_inline(title, inliner)}</h{n}>")
            i += 1
            continue
        if (stripped.startswith("|") and i + 1 < len(lines)
                and _SEPARATOR.match(lines[i + 1]) and "-" in lines[i + 1]):
            flush()
            block = [line, lines[i + 1]]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block, inliner))
            continue
        if _LIST_ITEM.match(line) and not para:
            ordered = _LIST_ITEM.match(line).group(2)[0].isdigit()
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                item = _LIST_ITEM.match(lines[i])
                if item:
                    items.append(item.group(3))
                elif items:  # a continuation line of the item above
                    items[-1] += " " + lines[i].strip()
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(x, inliner)}</li>" for x in items)
                       + f"</{tag}>")
            continue
        if not stripped:
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return "\n".join(out), {"linked": inliner.linked, "missing": inliner.missing}


def write_html(report_md: str | Path, out: str | Path | None = None, *,
               base: str | Path | None = None, max_bytes: int = MAX_BYTES) -> Path:
    """Write ``report.html`` beside ``report_md`` (or at ``out``): one self-contained page.

    Args:
        report_md: the Markdown report.
        out: the page to write; default ``report_md`` with the suffix ``.html``.
        base: the folder the report's relative references are relative to; default the
            report's own folder. The relative links left in the page (MIDI files, files too
            large to inline) are rewritten to work from the page's folder.
        max_bytes: cap on the inlined files' encoded size (bytes); see the module docstring.

    Returns:
        The path written.
    """
    md = Path(report_md)
    if not md.is_file():
        raise FileNotFoundError(f"report not found: {md}")
    text = md.read_text(encoding="utf-8")
    page_path = Path(out) if out is not None else md.with_suffix(".html")
    body, notes = markdown_to_html(text, Path(base) if base is not None else md.parent,
                                   max_bytes=max_bytes, page_dir=page_path.parent)
    title_m = re.search(r"^#\s+(.*)$", text, flags=re.M)
    title = html.escape(title_m.group(1).strip() if title_m else md.stem)
    banner = ""
    if notes["linked"]:
        mb = max_bytes / 2**20
        files = ", ".join(html.escape(f) for f in notes["linked"])
        banner = (f'<p class="note">This page inlines at most {mb:.0f} MB of pictures and '
                  f"sound; these files are linked instead (keep them beside the page): "
                  f"{files}.</p>\n")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            f"{banner}{body}\n</main>\n</body>\n</html>\n")
    return write_text(page_path, page)
