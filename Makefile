# Two commands on a fresh machine: `make demo` and `make test`. Both do all set-up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
# uv installs the venvs (tools/uv_pip.py passes pip's index, find-links and constraint settings
# on to it): 22-28 s for the fresh test venv where one pip run took 62 s (wheels unpacked in
# parallel; the same packages).
UV_INSTALL := $(PYTHON) tools/uv_pip.py $(PY) --quiet
DEMO_EXTRAS := cpu,export,serve
TEST_EXTRAS := cpu,export,torch-gpu,serve,ray,eval,dev

# Python writes the bytecode of what it imports during make's commands, even where the
# environment says not to (PYTHONDONTWRITEBYTECODE, set on this project's machines and CI): the
# test venv is installed without bytecode (below), and without the cache every process the suite
# starts would compile the modules it imports again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup test lint demo bench bench-full gpu-assets gpu-check gpu-check-dry clean

# What `make demo` and the README's quick starts run (export with torch, ONNX Runtime on CPU, the
# web app); InsightFace's wheel carries the photographs the demo renders clips from when the
# shared videos are missing (--no-deps keeps opencv-python-headless intact).
$(DEMO_STAMP): pyproject.toml Makefile tools/uv_pip.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "uv>=0.5"
	$(UV_INSTALL) --compile-bytecode -e ".[$(DEMO_EXTRAS)]"
	$(UV_INSTALL) --compile-bytecode --no-deps "insightface==2.1"
	touch $@

# Everything the tests use (also the torch detector (onnx2torch), Ray, plots and the test tools),
# in one uv run and without byte-compiling: compiling every module of the ~6 GB installed (torch's
# CUDA build among them) took ~50 s of a ~130 s clean set-up on two cores, when the suite imports
# a small part of them; the suite writes the bytecode of what it imports (see above).
$(STAMP): pyproject.toml Makefile tools/uv_pip.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --no-compile "uv>=0.5"
	$(UV_INSTALL) -e ".[$(TEST_EXTRAS)]"
	$(UV_INSTALL) --no-deps "insightface==2.1"
	touch $@

# Headless Chromium for the upload-page test, and FFmpeg's command-line tools for the tests that
# make edit-list cuts and HDR clips (Debian packages; needs root, as on CI). Independent of the
# venv: `setup` installs both at once.
$(VENV)/.browser:
	mkdir -p $(VENV)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  command -v ffmpeg >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver ffmpeg >/dev/null; } || \
	  echo "warning: could not install chromium/ffmpeg; the tests that need them will be skipped"
	touch $@

# The venv and the Debian packages side by side (pip and apt each keep about one core busy).
setup:
	$(MAKE) --no-print-directory -j2 $(STAMP) $(VENV)/.browser

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Two pytest-xdist workers; the tests that build full models run on one of them, from the
# start (tests/conftest.py; docs/testing.md).
TEST_WORKERS ?= 2
test: setup lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The demo needs only its extras (no browser, no FFmpeg command line, no test tools).
demo: $(DEMO_STAMP)
	$(VENV)/bin/dfe demo

$(VENV)/.baseline: $(STAMP)
	$(UV_INSTALL) -e ".[dlib]"
	$(UV_INSTALL) --no-deps "face_recognition==1.3.0"
	touch $@

# A short suite (a few minutes): JSON, Markdown report and plots in bench_out/.
bench: $(VENV)/.baseline
	$(VENV)/bin/dfe bench --out bench_out

# The full suite behind docs/benchmarks.md's report.
bench-full: $(VENV)/.baseline
	$(VENV)/bin/dfe bench --full --out bench_out/full

# The PyTorch GPU check (benchmarks/gpu_check.py). Here: gather the wheels, detector and clips
# the GPU machine needs into gpu_assets/ (git-ignored), and run the whole check on CPU first.
gpu-assets: setup
	$(PY) -m benchmarks.gpu_check --prepare

gpu-check-dry: gpu-assets
	$(PY) -m benchmarks.gpu_check --dry-run

# On the GPU machine (its own python3, no venv, offline; gpu_assets/ carried with the checkout).
gpu-check:
	$(PYTHON) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf demo_out .pytest_cache .ruff_cache
