"""Prometheus metrics of the service, for the operators' scraper (no auth unless
METRICS_TOKEN is set: then `Authorization: Bearer <it>`, as Prometheus sends it).

Job numbers come from PostgreSQL at scrape time (shared.core.metrics), so every API
replica answers the same; the process metrics are this process's own. Worker
task metrics come from Flower's /metrics. Do not expose this route publicly without
METRICS_TOKEN.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry, generate_latest

from shared.core.config import get_settings
from shared.core.errors import Unauthorized
from shared.core.metrics import ServiceMetricsCollector

router = APIRouter(tags=["health"])

# Apart from the default registry: registering there would run the queries at
# import time, and a second app in one process would register twice.
_service = CollectorRegistry()
_service.register(ServiceMetricsCollector())


@router.get(
    "/metrics",
    summary="Prometheus metrics (keep this route off the public internet)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}}},
)
def metrics(request: Request) -> Response:
    # Published with the API (compose publishes port 8000 on every interface), the
    # route answered anyone, and each scrape writes (the totals' fold) and aggregates.
    token = get_settings().metrics_token
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("Send METRICS_TOKEN as 'Authorization: Bearer <token>'.")
    # A database error propagates to the 503 service_unavailable handler.
    body = generate_latest(_service) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
