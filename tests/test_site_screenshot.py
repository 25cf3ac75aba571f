"""The documentation site as a reader sees it (slow): the site built with ``mkdocs build
--strict`` into a temporary folder, its home page and the models page opened from the file
system in headless Chromium (as tests/test_html_report.py opens the HTML report) and
screenshotted; each screenshot must be the window's size, styled (the theme's header bar across
its top: the stylesheets loaded from the file system) and carry text (not a blank page).

The home page's screenshot is checked in as docs/site_home.png, which the README shows. Run with
``VRNN_UPDATE_SCREENSHOTS=1`` (``make screenshots``) to replace it with the new one; otherwise the
checked-in copy is only checked to be a screenshot of the same kind.

Skips without Chromium (Debian: ``apt-get install chromium``; ``make test-slow`` installs it
when root) or without the docs extra.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED_IN = ROOT / "docs" / "site_home.png"
WINDOW = (1280, 800)
HEADER = (64, 81, 181)
"""Material for MkDocs' default primary colour (indigo), the header bar's."""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(exe: str, page: Path, shot: Path) -> None:
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--hide-scrollbars",
                        "--virtual-time-budget=5000", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                        f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]


def _check(shot: Path) -> None:
    """The window's size; the header bar across the top; text below it; not blank."""
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == WINDOW, (shot.name, img.size)
    px = np.asarray(img).astype(int)  # (H, W, 3)
    top = px[5:40, :, :]  # the header bar, 48 px high
    header = np.all(np.abs(top - HEADER) < 16, axis=2).mean()
    assert header > 0.5, f"{shot.name}: no theme header bar (its CSS did not load?): {header:.2f}"
    body = px[80:, :, :]
    dark = (body.max(axis=2) < 110).mean()  # text: dark pixels on the white page
    assert 0.003 < dark < 0.5, f"{shot.name}: {dark:.4f} of the page is text-dark"
    assert px.std() > 10, f"{shot.name}: a blank page"


@pytest.mark.slow
def test_site_home_and_models_pages_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; "
                    "`make test-slow` installs it when root)")
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("the docs extra is not installed: pip install -c constraints.txt -e '.[docs]'")
    pytest.importorskip("PIL")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-3000:]}"

    shots = {}
    for name in ("index", "models"):
        shots[name] = tmp_path / f"site_{name}.png"
        _screenshot(exe, site / f"{name}.html", shots[name])
        _check(shots[name])
    home, models = (np.asarray(_open(shots[n])) for n in ("index", "models"))
    assert np.abs(home.astype(int) - models.astype(int)).mean() > 1, "the two pages look alike"

    if os.environ.get("VRNN_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shots["index"], CHECKED_IN)
    assert CHECKED_IN.is_file(), f"{CHECKED_IN} is missing: run make screenshots"
    _check(CHECKED_IN)


def _open(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")
