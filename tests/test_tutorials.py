"""The tutorials of the documentation site run, and their pages show what their scripts write.

Every ``docs/tutorials/<slug>.py`` runs as ``python docs/tutorials/<slug>.py --out DIR --tiny``
in a subprocess on one thread (a few seconds each); every file its page ``<slug>.md``
references under ``figures/`` (an image, or a table included with ``--8<--``) must be one the
script writes, under the same name, and must be checked in under ``docs/tutorials/figures``
(``make tutorials`` rewrites them at the size the site shows). The site's strict build
(tests/test_docs.py) checks that every included file and snippet section exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
FIGURES = TUTORIALS / "figures"
SCRIPTS = sorted(TUTORIALS.glob("*.py"))
REFERENCE = re.compile(r"figures/([\w.-]+\.(?:png|md))")
"""A page's reference to an output: ``](figures/x.png)`` or
``--8<-- "docs/tutorials/figures/x.md"``."""


def _referenced(page: Path) -> set[str]:
    return set(REFERENCE.findall(page.read_text(encoding="utf-8")))


def test_there_are_tutorials_and_each_has_its_page():
    assert {"fit", "estimators", "generate"} <= {s.stem for s in SCRIPTS}
    for script in SCRIPTS:
        page = script.with_suffix(".md")
        assert page.is_file(), f"{script.name} has no page {page.name}"
        assert f'--8<-- "docs/tutorials/{script.name}' in page.read_text(encoding="utf-8"), \
            f"{page.name} does not show its script"
        assert _referenced(page), f"{page.name} shows none of its outputs"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_tutorial_runs_tiny_and_writes_what_its_page_shows(script, tmp_path):
    # one thread: torch takes its intra-op thread count from OMP_NUM_THREADS
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--tiny"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script.name} --tiny failed:\n{done.stderr[-3000:]}"

    slug = script.stem
    written = {p.name for p in tmp_path.iterdir()}
    assert written, f"{script.name} wrote nothing"
    stray = sorted(n for n in written if not n.startswith(f"{slug}-"))
    assert not stray, f"{script.name} wrote files not named {slug}-*: {stray}"
    for name in written:
        assert (tmp_path / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    shown = _referenced(script.with_suffix(".md"))
    assert shown <= written, f"{slug}.md shows files its script does not write: " \
                             f"{sorted(shown - written)}"
    missing = sorted(n for n in shown if not (FIGURES / n).is_file())
    assert not missing, f"not checked in under docs/tutorials/figures (make tutorials): {missing}"
    stale = sorted(p.name for p in FIGURES.glob(f"{slug}-*") if p.name not in written)
    assert not stale, f"docs/tutorials/figures holds files {script.name} no longer writes: {stale}"


def test_the_models_graphs_are_drawn_shown_and_up_to_date(tmp_path):
    """docs/figures/graphs.py draws one graph per family; docs/models.md shows every one, and
    the checked-in PNGs are what the script draws now (``make tutorials`` redraws them)."""
    from PIL import Image

    done = subprocess.run([sys.executable, str(ROOT / "docs" / "figures" / "graphs.py"),
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    drawn = {p.name for p in tmp_path.glob("graph-*.png")}
    assert {f"graph-{f}.png" for f in ("rnn", "vrnn", "srnn", "dmm", "storn")} <= drawn
    checked_in = ROOT / "docs" / "figures"
    assert {p.name for p in checked_in.glob("graph-*.png")} == drawn
    models = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for name in sorted(drawn):
        assert f"](figures/{name})" in models, f"docs/models.md does not show {name}"
        new, old = (np.asarray(Image.open(d / name).convert("RGB")).astype(int)
                    for d in (tmp_path, checked_in))
        assert new.shape == old.shape, name
        changed = (np.abs(new - old).max(axis=2) > 100).sum()  # an edge moved, not a shade
        assert changed < 50, f"docs/figures/{name} is stale ({changed} pixels differ): " \
                             f"make tutorials"
