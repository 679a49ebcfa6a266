# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned, so pip takes the CPU build instead of a multi-GB CUDA one.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: venv demo test test-unit test-integration bench bench-serve clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The main job: LoRA on the embedded Gemma 3 270M, Kubernetes docs en->zh, before/after report.
# An earlier runs/demo is kept, moved aside to runs/demo.prev-<time>, never replaced silently.
demo: venv
	@if [ -e runs/demo ]; then prev=runs/demo.prev-$$(date +%Y%m%d-%H%M%S); mv runs/demo $$prev; \
	  echo "keeping the previous runs/demo as $$prev"; fi
	$(BIN)/loraforge train configs/demo.yaml
	@echo "report: runs/demo/report.md  (HTML: runs/demo/report.html)"

test: venv
	OMP_NUM_THREADS=2 $(BIN)/pytest -q --durations=15 tests

test-unit: venv
	$(BIN)/pytest -q tests/unit

test-integration: venv
	$(BIN)/pytest -q tests/integration

# The README's training bench table: TRL+PEFT vs loraforge and its ablation (about 22 min on 2 cores).
bench: venv
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/loraforge bench train --steps 12 --batch-size 8 --ablation

# Load test behind the README's serving numbers: the real Gemma 3 270M with the demo adapter.
bench-serve: venv
	$(BIN)/loraforge serve --base gemma3-270m --adapter k8s=runs/demo --port 8765 & SERVER=$$!; \
	for i in $$(seq 1 120); do curl -sf http://127.0.0.1:8765/health >/dev/null && break; sleep 1; done; \
	$(BIN)/loraforge bench serve --url http://127.0.0.1:8765 --requests 200 --concurrency 16 --max-tokens 64 \
	  --models k8s,gemma3-270m --out bench/results/serve.json; kill $$SERVER

clean:
	rm -rf $(VENV) runs build src/*.egg-info
