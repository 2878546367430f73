"""The instruments: module-level, in no registry of their own (rt.metrics.registry gathers them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# `_created` series double every counter and histogram and no dashboard reads them in the text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUEST_SECONDS = Histogram(
    "rt_http_request_duration_seconds",
    "REST request latency by method, route template and status.",
    ("method", "route", "status"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)
ORDERS_ACCEPTED = Counter(
    "rt_orders_accepted",
    "Orders Cerberus let through to the venue.",
    registry=None,
)
ORDERS_REFUSED = Counter(
    "rt_orders_refused",
    "Orders Cerberus refused, by the first check that failed.",
    ("check",),
    registry=None,
)
KILL_SECONDS = Histogram(
    "rt_kill_duration_seconds",
    "Charon: kill switch latency, from the request to every order canceled and position closed, by action.",
    ("action",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)
FANOUT_SECONDS = Histogram(
    "rt_hub_fanout_duration_seconds",
    "Time to hand one event to the send queues of all its subscribers.",
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
    registry=None,
)
COMMIT_SECONDS = Histogram(
    "rt_store_commit_duration_seconds",
    "Store transaction COMMIT latency.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=None,
)
ROLE_HELD = Gauge(
    "rt_role_held",
    "1 while this instance holds the role's lease (the market feed, ...), else 0.",
    ("role",),
    registry=None,
)
LEASE_RENEWALS = Counter(
    "rt_lease_renewals",
    "Lease renewals by role and result: ok, lost (another holds it), error (Redis failed), late, or unfit (the store "
    "is unreachable, so the role is given up).",
    ("role", "result"),
    registry=None,
)

WEBHOOK_DELIVERIES = Counter(
    "rt_webhook_deliveries",
    "Webhook delivery attempts by outcome: succeeded, retry (tried again later) or failed (for good).",
    ("outcome",),
    registry=None,
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "rt_webhook_delivery_seconds",
    "Time from sending a webhook delivery to its answer (or to giving up on one).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)
WEBHOOK_BACKLOG = Gauge(
    "rt_webhook_backlog",
    "Pending webhook deliveries of enabled endpoints, over every account (refreshed every few seconds).",
    registry=None,
)

INSTRUMENTS = (
    REQUEST_SECONDS,
    ORDERS_ACCEPTED,
    ORDERS_REFUSED,
    KILL_SECONDS,
    FANOUT_SECONDS,
    COMMIT_SECONDS,
    ROLE_HELD,
    LEASE_RENEWALS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_SECONDS,
    WEBHOOK_BACKLOG,
)
