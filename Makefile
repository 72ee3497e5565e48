# Two entry points: `make demo` and `make test`. Both create .venv and install
# what they need from scratch (every extra: [all,test]); torch is pinned to the CPU
# build (pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# OpenCLIP is a test-only reference for the losses. --no-deps: its dependencies
# would replace the CPU torch with a multi-GB CUDA build; the tests load only its loss.py.
OPEN_CLIP := open-clip-torch==3.3.0
# CLIP_benchmark: the test-only reference of the multi-caption retrieval protocol (its
# metrics/zeroshot_retrieval.py is loaded by file path; --no-deps for the same reason).
CLIP_BENCHMARK := clip-benchmark==1.6.2

.PHONY: demo test install screenshots clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test]'
	$(BIN)/pip install --quiet --no-deps $(OPEN_CLIP) $(CLIP_BENCHMARK)
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/jointspace demo --out demo_out

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# the README's screenshots (docs/*.png): the audio demo in demo_audio (run unless it is
# there), its reports, a compare report and the search page, in Debian's chromium
screenshots: $(BIN)/.installed
	$(BIN)/python docs/make_screenshots.py --work demo_audio

clean:
	rm -rf $(VENV) demo_out
