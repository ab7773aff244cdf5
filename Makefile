# The two commands that matter: `make run` (the pipeline on sample data) and `make test`.
# Both set up a fresh machine: Python env (uv), Kafka jars, a PostgreSQL cluster.
SHELL := /bin/bash
FAMILIES ?= 2000
SEED ?= 2022
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup stack-up stack-down stack-status run serve lint test test-unit test-integration test-cluster token topics-render asyncapi-render clean bench browser-deps

setup:
	bash scripts/bootstrap.sh

stack-up: setup
	bash scripts/stack.sh up

stack-down:
	bash scripts/stack.sh down

stack-status:
	bash scripts/stack.sh status

# Generate a deterministic synthetic East Kalimantan sample, push it through the
# four services on real Kafka and PostgreSQL, print the summary, shut down.
run: stack-up
	. .local/stack.env && $(PY) -m regsosek_tools.run --families $(FAMILIES) --seed $(SEED); rc=$$?; \
	  bash scripts/stack.sh down; exit $$rc

# Start the stack and the services and leave them serving (Ctrl-C to stop); the operations
# console is at http://127.0.0.1:8005/ (printed again once everything is up).
serve: stack-up
	@echo "Operations console: http://127.0.0.1:8005/ (once the services are up)"
	. .local/stack.env && $(PY) -m regsosek_tools.run --serve --families $(FAMILIES) --seed $(SEED)

# The headless browser of the console's tests (Debian's chromium and chromium-driver).
browser-deps:
	bash scripts/browser.sh

# Lint and type-check with the configuration in pyproject.toml: ruff on the whole repository,
# mypy on libs/regsosek/src, services/*/src and tools/src ([tool.mypy] files).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

# Lint first (a finding fails the target before anything starts), then unit tests, then
# integration tests (the console's browser tests among them) against the real broker and
# database, then (the single-broker stack stopped) the scale-out run on the three-broker cluster
# (make test-cluster, about 9 minutes: README, "Scale-out and sizing").
test: lint stack-up browser-deps
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 0 ]; then . .local/stack.env && $(PY) -m pytest -q -m "integration and not cluster" $(PYTEST_ARGS); rc=$$?; fi; \
	bash scripts/stack.sh down; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory test-cluster; rc=$$?; fi; exit $$rc

test-unit: setup
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

test-integration: stack-up browser-deps
	. .local/stack.env && $(PY) -m pytest -q -m "integration and not cluster" $(PYTEST_ARGS)

# The scale-out run (tests/integration/test_scale_out.py) on the three-broker cluster
# (scripts/kafka-cluster.sh): brokers killed, services rolled and scaled while families arrive.
# Stops a single broker of this checkout first (the cluster's first node takes its port).
test-cluster: setup
	bash scripts/kafka.sh stop
	REGSOSEK_KAFKA_BROKERS=3 bash scripts/stack.sh up || { REGSOSEK_KAFKA_BROKERS=3 bash scripts/stack.sh down; exit 1; }
	. .local/stack.env && $(PY) -m pytest -q -s -m cluster $(PYTEST_ARGS); rc=$$?; \
	  REGSOSEK_KAFKA_BROKERS=3 bash scripts/stack.sh down; exit $$rc

# A bearer token for local use, e.g. `make token ROLE=officer SUB=OFC-1 AREA=6472`, or a programme's:
# `make token ROLE=programme SUB=PKH PROGRAMMES=pkh AREA=64` (several: PROGRAMMES=pkh,pip AREA="64 65")
ROLE ?= admin
SUB ?= local-admin
AREA ?= 64
PROGRAMMES ?=
token: setup
	@$(PY) -m regsosek.auth --role $(ROLE) --sub $(SUB) --area "$(AREA)" $(if $(PROGRAMMES),--programme "$(PROGRAMMES)")

# Regenerate deploy/kafka/topics.yaml from the topic registry.
topics-render: setup
	$(PY) -m regsosek.topics render-strimzi --profile production > deploy/kafka/topics.yaml

# Regenerate the AsyncAPI 3.0 document, the per-event JSON Schemas and the samples from
# the topic registry and the event contracts (tests/asyncapi fails when they are stale).
asyncapi-render: setup
	$(PY) -m regsosek.asyncapi render > docs/asyncapi.yaml.tmp && mv docs/asyncapi.yaml.tmp docs/asyncapi.yaml
	$(PY) -m regsosek.asyncapi schemas docs/schemas > /dev/null

clean: stack-down
	rm -rf .local

# A synthetic survey drawn from known coefficients (the shipped illustrative model plus
# noise), a PMT calibration on it, and the fit report (R², exclusion and inclusion errors).
.PHONY: calibrate-demo
calibrate-demo: setup
	mkdir -p .local/calibration
	$(PY) -m regsosek_tools.survey --seed $(SEED) --families 20000 --out .local/calibration/survey.csv
	$(PY) -m regsosek_tools.calibration --survey .local/calibration/survey.csv --regency-effects --select aic \
	  --out .local/calibration/pmt-calibrated.yaml

# The national-scale benchmark (issue 7): throughput, latency at fixed offered rates,
# per-service throughput, consumer lag and RSS, replay, the raw-Kafka ceiling and
# horizontal scale, in one isolated run; prints a row for BENCHMARKS.md, writes JSON to
# .local/bench/. `make bench BENCH_ARGS=--quick` for a short run; BENCH_ARGS=--profile adds
# flame graphs of every service (py-spy) and BENCH_ARGS=--plots the PNGs, both under docs/bench/.
BENCH_ARGS ?=
.PHONY: bench-stored bench-rerank bench-plots
bench: stack-up
	. .local/stack.env && $(PY) -m regsosek_tools.bench $(BENCH_ARGS); rc=$$?; \
	  bash scripts/stack.sh down; exit $$rc

# Cost as the registry grows (issue 16, target 4): throughput with STORED families already in
# every service's database (bulk-loaded with COPY), as ratios to the empty store, and the plot
# docs/bench/throughput-vs-stored.png. 2,000,000 stored take ~30 GiB of disk (BENCHMARKS.md).
STORED ?= 0,200000,2000000
bench-stored:
	$(MAKE) bench BENCH_ARGS="--phases stored --stored $(STORED) --plots $(BENCH_ARGS)"

# Re-rank and replay against the scope's size (issue 16, targets 2 and 3): each size of RERANK_SIZES
# bulk-loaded into a classify database of its own, then `classify.rerank` and `classify.replay` timed with
# their peak RSS, and the plot docs/bench/rerank-vs-scope.png. 5,000,000 families take ~10 GiB of disk
# and ~25 minutes on a quiet 2-core machine (BENCHMARKS.md).
RERANK_SIZES ?= 100000,1000000,5000000
bench-rerank:
	$(MAKE) bench BENCH_ARGS="--phases rerank --rerank-sizes $(RERANK_SIZES) --plots $(BENCH_ARGS)"

# The PNGs again from saved results: BENCH_JSON (bench results with a stored phase, several
# allowed) and RERANK_JSON (re-rank time and RSS per scope size; format in
# tools/src/regsosek_tools/report/plots.py), into docs/bench/.
BENCH_JSON ?=
RERANK_JSON ?=
bench-plots: setup
	$(PY) -m regsosek_tools.report.plots $(foreach f,$(BENCH_JSON),--bench $(f)) \
	  $(if $(RERANK_JSON),--rerank $(RERANK_JSON)) --out docs/bench
