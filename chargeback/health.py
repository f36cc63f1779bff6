"""`/healthz` for load balancers and container health checks.

200 `{"status": "ok"}` when the database answers (and the Celery broker, when one is
configured); 503 `{"status": "unavailable"}` otherwise. The body never says more: no
versions, no error text. The reason of a failure goes to the server log.

`HealthCheckMiddleware` answers before any other middleware, so the check works whatever
`ALLOWED_HOSTS` and HTTPS redirects say (a load balancer probes by IP address, over HTTP).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
BROKER_TIMEOUT_SECONDS = 2.0


def database_ok() -> bool:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning(
            "health: database check failed: %s", exc.__class__.__name__, extra={"check": "database"}
        )
        return False
    return True


def broker_ok() -> bool:
    url = getattr(settings, "CELERY_BROKER_URL", "")
    if not url:
        return True  # no broker: tasks run in-process
    try:
        from kombu import Connection

        with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
            # Some transports connect lazily: a channel makes the broker answer.
            conn.default_channel  # noqa: B018
    except Exception as exc:
        logger.warning("health: broker check failed: %s", exc.__class__.__name__, extra={"check": "broker"})
        return False
    return True


def healthz(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response: HttpResponse = JsonResponse({"status": "method not allowed"}, status=405)
        response["Allow"] = "GET, HEAD"
    elif database_ok() and broker_ok():
        response = JsonResponse({"status": "ok"})
    else:
        response = JsonResponse({"status": "unavailable"}, status=503)
    response["Cache-Control"] = "no-store"
    return response


class HealthCheckMiddleware:
    """Serves HEALTH_PATH first, ahead of host validation, redirects, sessions and auth."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.rstrip("/") == HEALTH_PATH:
            return healthz(request)
        return self.get_response(request)
