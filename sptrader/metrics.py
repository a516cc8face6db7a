"""Prometheus metrics of a running daemon (``daemon.metrics_port``), served by
prometheus_client; values are read from the engine at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sptrader.clock import now_us
from sptrader.config import DaemonConfig


class EngineCollector:
    def __init__(self, engine: Any, server: Any) -> None:
        self.engine = engine
        self.server = server

    def collect(self) -> Iterator[Any]:
        statuses = self.engine.supervisor.status()
        rate = GaugeMetricFamily(
            "sptrader_service_events_per_second", "Events per second", labels=["service"]
        )
        errors = CounterMetricFamily(
            "sptrader_service_errors", "Crashes of the service", labels=["service"]
        )
        restarts = CounterMetricFamily(
            "sptrader_service_restarts", "Restarts of the service", labels=["service"]
        )
        age = GaugeMetricFamily(
            "sptrader_service_last_event_age_seconds", "Age of the last event", labels=["service"]
        )
        now = now_us()
        for status in statuses:
            rate.add_metric([status.name], status.events_per_s)
            errors.add_metric([status.name], status.errors)
            restarts.add_metric([status.name], status.restarts)
            if status.last_event_us is not None:
                age.add_metric([status.name], (now - status.last_event_us) / 1e6)
        yield from (rate, errors, restarts, age)
        drops = CounterMetricFamily(
            "sptrader_bus_dropped_events",
            "Events dropped by lossy subscribers",
            labels=["subscriber"],
        )
        for subscription in self.engine.bus.subscriptions:
            drops.add_metric([subscription.name], subscription.dropped)
        yield drops
        writer = self.engine.writer
        if writer is not None:
            yield CounterMetricFamily(
                "sptrader_store_rows_written",
                "Rows written by the store writer",
                value=writer.rows_written,
            )
            yield GaugeMetricFamily(
                "sptrader_store_flush_milliseconds",
                "Duration of the last flush",
                value=writer.last_flush_ms,
            )
        instrument_age = GaugeMetricFamily(
            "sptrader_instrument_last_bar_age_seconds",
            "Age of the newest forming bar",
            labels=["instrument"],
        )
        for name in self.engine.watchlist:
            bar = self.engine.forming_bar(name)
            if bar is not None:
                instrument_age.add_metric([name], max(0.0, (now - bar.ts_us) / 1e6))
        yield instrument_age
        yield GaugeMetricFamily(
            "sptrader_api_clients", "Attached API clients", value=self.server.clients
        )


def serve_metrics(engine: Any, server: Any, config: DaemonConfig) -> Any:
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine, server))
    http_server, _thread = start_http_server(
        config.metrics_port, addr=config.metrics_host, registry=registry
    )
    return http_server
