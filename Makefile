# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-ws bench-scaleout bench-webhooks bench-ticks clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/rt serve

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rt tests bench
	$(BIN)/ruff format --check rt tests bench
	$(BIN)/mypy rt

bench: $(STAMP)
	$(BIN)/python bench/auth_overhead.py
	$(BIN)/python bench/trading.py

# WebSocket fan-out at the limit beside a bare websockets server, server on core 0 and load on core 1: a sweep of
# tick rates (3 runs), 1,000 clients x 100 ticks/s, idle memory, stuck clients, orders and a ping burst under load
# (about 15 minutes; BENCH_WS_ARGS=--quick for a smoke test, --json FILE for the figures).
bench-ws: $(STAMP)
	$(BIN)/python bench/ws_fanout.py $(BENCH_WS_ARGS)

# Orders, limits, kill and fan-out over 1-3 instances on PostgreSQL + Redis, SQLite for comparison (about 3 minutes;
# BENCH_SCALEOUT_ARGS=--quick for a smoke test). Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379.
bench-scaleout: $(STAMP)
	$(BIN)/python bench/scaleout.py $(BENCH_SCALEOUT_ARGS)

# Webhook delivery latency, throughput over 10 endpoints, a dead endpoint beside a healthy one, 10,000 queued
# deliveries drained after a restart, and alert -> order (a few minutes; BENCH_WEBHOOKS_ARGS=--quick for a smoke test).
bench-webhooks: $(STAMP)
	$(BIN)/python bench/webhooks.py $(BENCH_WEBHOOKS_ARGS)

# Server CPU per tick at 100 ticks/s: 10,000 idle accounts beside 10,000 with an open position each (about 3 minutes).
bench-ticks: $(STAMP)
	$(BIN)/python bench/tick_work.py $(BENCH_TICKS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
