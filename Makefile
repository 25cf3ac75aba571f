# Two commands do everything on a fresh machine:
#   make demo   - set up, then the paper's comparison on raw speech: VRNN-Gauss against RNN-Gauss
#                 and RNN-GMM, about five minutes on two cores (chorales when speech is absent)
#   make test   - set up, then run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEBIAN_SOUNDS := asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav \
                 asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav

.PHONY: demo test test-slow lint bench data docs tutorials screenshots clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins torch==2.13.0+cpu; an open range would pull CUDA wheels.
	$(PY) -m pip install --quiet -c constraints.txt -e '.[data,export,dev,docs]'
	touch $(STAMP)

# The speech data sets ship in Debian packages. Installed with apt-get when we are root;
# otherwise we print the command and the speech data sets stay absent (`vrnn data list`).
data:
	@missing=""; for p in $(DEBIAN_SOUNDS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing speech data:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "apt-get failed: the speech data sets stay absent"; \
	else \
	  echo "speech data sets absent; to install them run: sudo apt-get install$$missing"; \
	fi

demo: $(STAMP) data
	$(PY) -m vrnn demo

test: $(STAMP) data
	# one worker per core (pytest-xdist); each test runs its tiny models on one thread
	$(PY) -m pytest -q -n auto

# The browser check of report.html (tests/test_html_report.py) needs Debian's chromium:
# installed with apt-get when we are root and it is missing; otherwise we print the command
# (and that test skips).
test-slow: $(STAMP) data
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "apt-get failed: the browser test will skip"; \
	  else \
	    echo "chromium absent (the browser test will skip); to install it run: sudo apt-get install chromium"; \
	  fi; \
	fi
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m vrnn benchmark

# The documentation site (mkdocs.yml) into build/site: the pages of docs/, the API reference from
# the docstrings (mkdocstrings), the command-line page from the parsers (docs/gen_cli.py). The
# docs extra is installed when missing; --strict turns every warning (a broken link, a docstring
# naming a parameter the function lacks) into a failure. NO_MKDOCS_2_WARNING silences the
# theme's end-of-life banner (Material for MkDocs is maintained until May 2027).
docs: $(STAMP)
	@$(PY) -c "import mkdocs, mkdocstrings, mkdocstrings_handlers.python, material" 2>/dev/null \
	  || $(PY) -m pip install --quiet -c constraints.txt -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The tutorials' outputs, checked in under docs/tutorials/figures: every docs/tutorials/*.py rerun
# at the size the site shows (a few CPU-minutes in all, with fixed seeds); tests/test_tutorials.py
# runs each with --tiny and checks that its page shows only what it writes. Also the models'
# graphs of docs/models.md (docs/figures/graphs.py, seconds).
tutorials: $(STAMP)
	@for f in docs/tutorials/*.py; do echo "$$f"; \
	  $(PY) $$f --out docs/tutorials/figures || exit 1; done
	$(PY) docs/figures/graphs.py --out docs/figures

# docs/site_home.png, the README's picture of the site: the browser test of the built site
# (tests/test_site_screenshot.py, headless Chromium) rewrites it.
screenshots: $(STAMP)
	VRNN_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q -m slow -p no:cacheprovider \
	  tests/test_site_screenshot.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
