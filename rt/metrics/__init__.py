"""Prometheus metrics: the instruments the code counts with, and the scrape port on 127.0.0.1:RT_METRICS_PORT.

The instruments are module-level so engine, hub and store code records with one line and no handle to pass around;
they belong to no registry until `registry(runtime)` gathers them with that runtime's own gauges and the process
metrics, so several runtimes in one process never clash.
"""

from __future__ import annotations

from rt.metrics.instruments import (
    COMMIT_SECONDS,
    FANOUT_SECONDS,
    INSTRUMENTS,
    KILL_SECONDS,
    ORDERS_ACCEPTED,
    ORDERS_REFUSED,
    REQUEST_SECONDS,
)
from rt.metrics.registry import registry
from rt.metrics.server import serve

__all__ = [
    "COMMIT_SECONDS",
    "FANOUT_SECONDS",
    "INSTRUMENTS",
    "KILL_SECONDS",
    "ORDERS_ACCEPTED",
    "ORDERS_REFUSED",
    "REQUEST_SECONDS",
    "registry",
    "serve",
]
