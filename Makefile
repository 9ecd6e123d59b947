# Everything a fresh machine needs, in one place.
#   make book   -> builds the book (every notebook executed) into _build/html
#   make test   -> runs the test suite (unit tests, nbgrader round trip, book build)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build these machines install from local disk; Colab brings its own torch.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup browser book test exercises clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (coursekit)" > /dev/null
	touch $@

# tests/test_browser.py drives Debian's headless Chromium (/usr/bin/chromium); it never downloads a browser.
# CI runs as root on Debian; elsewhere install the two packages yourself or the test is skipped.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium chromium-driver; \
		else echo "no /usr/bin/chromium: run 'sudo apt-get install chromium chromium-driver' for tests/test_browser.py"; fi; \
	fi

book: setup
	$(BIN)/jupyter-book build . -W --keep-going

# The suite runs on every core (pytest-xdist), one test file per worker at a time, so that a file's
# module-level fixtures (a throwaway course, a graded batch) are built once. PYTEST_ARGS adds options.
test: setup browser
	$(BIN)/python -m pytest -ra -n auto --dist loadfile --durations=25 $(PYTEST_ARGS)

# Regenerate the student versions in exercises/ from solutions/ (never edit exercises/ by hand).
ASSIGNMENTS ?= ps1 ps2 ps3 ps4 ps5 ps6
exercises: setup
	for assignment in $(ASSIGNMENTS); do PATH="$(CURDIR)/$(BIN):$$PATH" nbgrader generate_assignment $$assignment --force || exit 1; done

clean:
	rm -rf _build
