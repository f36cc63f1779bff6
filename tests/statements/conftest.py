"""Fixtures of the statements tests: generated reference month, demo month, a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_TOTALS

REFERENCE_PIS = sorted({pi for pi, _project in REFERENCE_TOTALS})


def generate_and_render(period: str, **kwargs):
    """generate, then render the PDFs (eagerly, as the CLI does without a broker)."""
    from statements import services, tasks

    outcome = services.statements_generate(period=period, **kwargs)
    tasks.dispatch(outcome.to_render)
    return outcome


@pytest.fixture
def generated(reference_month):
    """The reference month with its statements issued and rendered."""
    return generate_and_render("2025-01")


@pytest.fixture
def demo_month(db, demo_dir):
    """The demo month 2026-10 imported with the mapping its README asks for."""
    from billing import selectors, services

    for slug in ("aws", "azure", "gcp", "hpc", "storage"):
        services.source_create(slug=slug)
    services.account_mapping_set(
        sub_account_id="210987654321",
        project_id="astro-survey",
        pi_email="carmen.diaz@university.example",
        fund_org="NSF-2025-0931",
    )
    for path in sorted(Path(demo_dir).glob("*.csv")):
        services.import_file(path=path, source=path.name.split("_", 1)[0], period="2026-10")
    return selectors.period_get("2026-10")


# --- a real SMTP server (aiosmtpd) ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_recipient(self) -> dict[str, list[EmailMessage]]:
        found: dict[str, list[EmailMessage]] = {}
        for message in self.messages:
            found.setdefault(str(message["To"]), []).append(message)
        return found


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        with self.server.lock:
            self.server.messages.append(message)  # type: ignore[arg-type]
            self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


def start_smtp_server() -> tuple[SmtpServer, object]:
    from aiosmtpd.controller import Controller

    server = SmtpServer(host="127.0.0.1", port=free_port())
    controller = Controller(_Handler(server), hostname=server.host, port=server.port)
    controller.start()
    return server, controller


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server in this process; Django's SMTP backend pointed at it."""
    server, controller = start_smtp_server()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = server.host
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 10
    yield server
    controller.stop()  # type: ignore[attr-defined]


def pdf_text(data: bytes) -> str:
    import io

    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
