# Quick start: `make tui` opens the control center on the simulated market;
# `make test` runs the linter and the test suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup tui test lint bench clean

$(BIN)/sptrader: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/sptrader

setup: $(BIN)/sptrader

tui: setup
	$(BIN)/sptrader tui

lint: setup
	$(BIN)/ruff check sptrader tests bench
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"  # vectorbt, beside our backtests
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/engine_path.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/tui_rss.py --quick
	$(BIN)/python bench/tui_load.py
	$(BIN)/python bench/daemon_fanout.py
	$(BIN)/python bench/feeds.py
	$(BIN)/python bench/fault_feed.py
	$(BIN)/python bench/dukascopy_decode.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/reads.py
	$(BIN)/python bench/gaps.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/indicators.py
	$(BIN)/python bench/scanner.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/broker.py
	$(BIN)/python bench/import_graph.py
	$(BIN)/python bench/event_routing.py
	$(BIN)/python bench/chart_latency.py
	$(BIN)/python bench/quit.py
	$(BIN)/python bench/interrupt.py
	$(BIN)/python bench/price_format.py
	$(BIN)/python bench/live_orders.py
	$(BIN)/python bench/research.py
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
