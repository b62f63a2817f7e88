# The two commands: `make run` (everything on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install services lint bench-submit bench-pipeline bench-sync bench-upload bench-soak bench-audiobook bench-hostile clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/speechq up

services:
	./scripts/services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install services lint
	$(BIN)/pytest

bench-submit: install services
	$(BIN)/python bench/submit_latency.py

bench-pipeline: install services
	$(BIN)/python bench/pipeline_throughput.py

bench-sync: install services
	$(BIN)/python bench/sync_overhead.py

bench-upload: install
	$(BIN)/python bench/upload_memory.py

bench-soak: install services
	$(BIN)/python bench/soak.py

bench-audiobook: install services
	$(BIN)/python bench/audiobook.py

bench-hostile: install services
	$(BIN)/python bench/hostile.py

clean:
	rm -rf $(VENV) data .pytest_cache
