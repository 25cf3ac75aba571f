"""The Markdown report -> self-contained HTML page (vrnn.study.html), and the page in a real
browser (headless Chromium; slow)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from vrnn.study.html import markdown_to_html, write_html

RED = (220, 30, 40)


def _png(path: Path, w: int = 120, h: int = 80, colour=RED) -> Path:
    from PIL import Image

    Image.new("RGB", (w, h), colour).save(path)
    return path


def _wav(path: Path, seconds: float = 0.5, rate: int = 8000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_table_with_alignment_and_inline_markup(tmp_path):
    md = ("| model | test `ll` |\n|---|---:|\n| **VRNN** | ~ 10.5 ± 1.2 |\n"
          "| a \\| b | `x|y` |\n")
    out, _ = markdown_to_html(md, tmp_path)
    assert out.count("<tr>") == 3
    assert '<th style="text-align:right">test <code>ll</code></th>' in out
    assert "<td><strong>VRNN</strong></td>" in out
    assert '<td style="text-align:right">~ 10.5 ± 1.2</td>' in out
    assert "<td>a | b</td>" in out and "<code>x|y</code>" in out  # escaped and code pipes


def test_headings_paragraphs_lists_code(tmp_path):
    md = ("# Title\n\nline one\nline two\n\n## Sub part\n\n- a\n- b *c*\n\n1. first\n2. second\n"
          "\n```\nvrnn train --x <y>\n```\n")
    out, _ = markdown_to_html(md, tmp_path)
    assert '<h1 id="title">Title</h1>' in out
    assert '<h2 id="sub-part">Sub part</h2>' in out
    assert "<p>line one line two</p>" in out
    assert "<ul><li>a</li><li>b <em>c</em></li></ul>" in out
    assert "<ol><li>first</li><li>second</li></ol>" in out
    assert "<pre><code>vrnn train --x &lt;y&gt;</code></pre>" in out


def test_images_inlined_as_data_uris(tmp_path):
    png = _png(tmp_path / "fig.png")
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "b.png")
    out, notes = markdown_to_html("![a fig](fig.png)\n\n![b](sub/b.png)\n\n![gone](no.png)",
                                  tmp_path)
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="a fig">', out)
    assert len(uris) == 1 and base64.b64decode(uris[0]) == png.read_bytes()
    assert out.count("data:image/png;base64,") == 2
    assert '<img src="no.png" alt="gone">' in out and notes["missing"] == ["no.png"]


def test_wav_links_become_players_midi_links_stay_relative(tmp_path):
    wav = _wav(tmp_path / "s 0.wav")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.mid").write_bytes(b"MThd")
    out, _ = markdown_to_html("- listen: [s 0.wav](s%200.wav), [x.mid](m/x.mid)", tmp_path)
    src = re.search(r'<audio controls preload="auto" src="data:audio/wav;base64,([^"]+)">', out)
    assert src and base64.b64decode(src.group(1)) == wav.read_bytes()
    assert '<a href="m/x.mid" type="audio/midi" download>x.mid</a>' in out
    assert "data:audio/midi" not in out


def test_escaping_no_html_injection(tmp_path):
    name = 'x"><script>alert(1)</script>.png'
    md = (f"<b>raw</b> & co\n\n![{name}]({name.replace(' ', '')})\n\n"
          "[click](javascript:alert(1)) [ok](https://example.org/?a=1&b=2)\n\n"
          "| <i>cell</i> |\n|---|\n| <script>x</script> |")
    out, _ = markdown_to_html(md, tmp_path)
    assert "<script>" not in out and "<b>" not in out and "<i>" not in out
    assert "&lt;b&gt;raw&lt;/b&gt; &amp; co" in out
    assert 'href="javascript' not in out
    assert '<a href="https://example.org/?a=1&amp;b=2">ok</a>' in out


def test_size_cap_links_instead_and_says_so(tmp_path):
    _wav(tmp_path / "big.wav", seconds=2.0)  # 32 kB, about 43 kB as base64
    _png(tmp_path / "small.png")
    md = tmp_path / "report.md"
    md.write_text("# R\n\n![p](small.png)\n\n[big.wav](big.wav)\n", encoding="utf-8")
    page = write_html(md, max_bytes=10_000).read_text(encoding="utf-8")
    assert "data:image/png;base64," in page  # the picture fits
    assert "data:audio/wav" not in page  # the sound does not: linked, with a player
    assert '<audio controls preload="auto" src="big.wav">' in page
    assert 'class="note"' in page and "big.wav" in page.split('class="note"')[1][:400]


def test_write_html_page(tmp_path):
    _png(tmp_path / "a.png")
    md = tmp_path / "report.md"
    md.write_text("# A <report>\n\ntext\n", encoding="utf-8")
    path = write_html(md)
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>A &lt;report&gt;</title>" in page
    assert 'class="note"' not in page
    with pytest.raises(FileNotFoundError, match="nope.md"):
        write_html(tmp_path / "nope.md")


def test_report_elsewhere_from_its_files(tmp_path):
    """vrnn reproduce's layout: report.md in the run folder, its files relative to docs/."""
    docs, run = tmp_path / "docs", tmp_path / "runs" / "study"
    (docs / "audio").mkdir(parents=True)
    run.mkdir(parents=True)
    _png(docs / "fig.png")
    _wav(docs / "audio" / "a.wav")
    (docs / "audio" / "s.mid").write_bytes(b"MThd")
    md = run / "report.md"
    md.write_text("![f](fig.png)\n\n[a.wav](audio/a.wav), [s.mid](audio/s.mid)\n",
                  encoding="utf-8")
    page = write_html(md, base=docs).read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "data:audio/wav;base64," in page
    assert '<a href="../../docs/audio/s.mid" type="audio/midi" download>' in page
    assert '<a href="../../docs/audio/a.wav">' in page


# -- the page in a real browser ----------------------------------------------------------------

PROBE = """<script>
window.addEventListener('load', () => {
  const a = document.querySelector('audio');
  const report = () => {
    const imgs = [...document.querySelectorAll('img')];
    const p = document.createElement('pre');
    p.id = 'probe';
    p.textContent = 'PROBE images=' + imgs.length +
      ' loaded=' + imgs.filter(i => i.complete && i.naturalWidth > 0).length +
      ' width0=' + (imgs[0] ? imgs[0].naturalWidth : -1) +
      ' audio=' + document.querySelectorAll('audio').length +
      ' ready=' + (a ? a.readyState : -1) + ' duration=' + (a ? a.duration : -1) + ' END';
    document.body.appendChild(p);
  };
  if (a && a.readyState < 1) { a.addEventListener('loadedmetadata', report);
                               a.addEventListener('error', report); a.load(); }
  else report();
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--hide-scrollbars",
                           "--autoplay-policy=no-user-gesture-required", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; "
                    "`make test-slow` installs it when root)")
    from PIL import Image

    _png(tmp_path / "fig.png", w=600, h=300)
    _wav(tmp_path / "tone.wav", seconds=0.5)
    md = tmp_path / "report.md"
    md.write_text("# Browser check\n\n![red block](fig.png)\n\n- [tone.wav](tone.wav)\n\n"
                  "| a | b |\n|---|---|\n| 1 | 2 |\n", encoding="utf-8")
    page = write_html(md)

    shot = tmp_path / "shot.png"
    r = _run_chromium(exe, f"--screenshot={shot}", "--window-size=1000,800", page.as_uri())
    assert shot.is_file(), r.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1000, 800)
    px = np.asarray(img)  # (800, 1000, 3)
    red = np.all(np.abs(px.astype(int) - RED) < 12, axis=2)
    assert red.sum() > 0.8 * 600 * 300 * 0.9, "the inlined picture is not on the screenshot"
    assert px.std() > 10  # not a blank page

    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    r = _run_chromium(exe, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    m = re.search(r"PROBE images=(\d+) loaded=(\d+) width0=(-?\d+) audio=(\d+) ready=(-?\d+) "
                  r"duration=([^ ]+) END", r.stdout)
    assert m, (r.stdout[-1000:], r.stderr[-2000:])
    images, loaded, width0, audios, ready, duration = m.groups()
    assert (images, loaded, width0, audios) == ("1", "1", "600", "1")
    assert int(ready) >= 1  # HAVE_METADATA: the inlined WAV decoded
    assert float(duration) == pytest.approx(0.5, abs=0.01)
