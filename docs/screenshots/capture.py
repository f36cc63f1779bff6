"""Take the admin screenshots in this folder, light and dark: dashboard, review queue, upload page,
a project's spending page and the queue of PIs' charge queries.

    .venv/bin/python docs/screenshots/capture.py [--out docs/screenshots] [--keep] [--pages spending,queries,period]

Builds a throwaway instance in a temporary directory: the demo month 2026-10 (fixtures/demo,
imported as `openchargeback demo` does) plus eleven earlier months of synthetic FOCUS data from
../shared/tools/focus_synth.py (so the twelve-period chart has something to show), a flag rule
and a reviewer. It then runs `manage.py runserver` on that instance and drives headless Chromium
over the DevTools protocol (standard library only: a minimal WebSocket client below) to log in,
switch `prefers-color-scheme`, drop files on the upload page and capture full-page PNGs.

Needs /usr/bin/chromium (`apt-get install -y chromium`). Writes nothing outside the temporary
directory except the PNGs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT.parent / "shared" / "tools" / "focus_synth.py"
DEMO = ROOT / "fixtures" / "demo"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SOURCES = {
    "aws": "Amazon Web Services",
    "azure": "Microsoft Azure",
    "gcp": "Google Cloud",
    "hpc": "HPC cluster",
    "storage": "Research storage",
}
DEMO_PERIOD = "2026-10"
HISTORY = [f"2025-{m:02d}" for m in (11, 12)] + [f"2026-{m:02d}" for m in range(1, 10)]


# --- the instance -------------------------------------------------------------------------------


def build_instance(data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "OPENCHARGEBACK_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'screens.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "chargeback.settings",
        "DEBUG": "true",
        "CELERY_BROKER_URL": "",
    }
    env.pop("OPENCHARGEBACK_CONFIG", None)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts import roles
    from accounts.services import roles_ensure
    from billing import services

    call_command("migrate", verbosity=0)
    services.billing_settings_update(
        organization_name="Research Computing", contact_email="rc-billing@university.example"
    )
    for slug, name in SOURCES.items():
        services.source_create(slug=slug, display_name=name, fund_org="RC-RECOVERY", account="4500")
    services.account_mapping_set(
        sub_account_id="210987654321",
        project_id="astro-survey",
        pi_email="carmen.diaz@university.example",
        fund_org="NSF-2025-0931",
    )
    synth_dir = data_dir / "synth"
    synth_dir.mkdir()
    for i, period in enumerate(HISTORY):
        # Sized to land near the demo month's few thousand a month, growing over the year.
        sizes = {"aws": 70 + 4 * i, "azure": 45 + 2 * i, "gcp": 4 + i // 3, "hpc": 3 + i // 4}
        for j, (provider, rows) in enumerate(sizes.items()):
            path = synth_dir / f"{provider}_{period}.csv"
            subprocess.run(
                [
                    sys.executable,
                    str(SYNTH),
                    str(path),
                    f"--rows={rows}",
                    f"--period={period}",
                    f"--provider={provider}",
                    "--pis=12",
                    f"--seed={i * 10 + j}",
                    "--grain=monthly",
                    "--untagged=0",
                ],
                check=True,
                capture_output=True,
            )
            services.import_file(path=path, source=provider, period=period, actor_name="demo")
        services.period_close(period=period, actor_name="demo", note="month end")
    for path in sorted(DEMO.glob("*.csv")):
        services.import_file(path=path, source=path.name.split("_")[0], actor_name="demo")
    services.flag_rule_save(
        name="Commitment purchases",
        pattern="^Purchase$",
        fields=["charge_category"],
        description="Savings plans and reservations bought up front: a reviewer confirms who pays.",
    )
    services.period_reevaluate_flags(period=DEMO_PERIOD, actor_name="demo")
    roles_ensure()
    user = get_user_model().objects.create_user(
        "fran", "fran@university.example", "screens", is_staff=True, first_name="Fran", last_name="Reviewer"
    )
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name=roles.REVIEWER))
    # The period page's statement runs (preview, issue, send) are shown to billing admins only.
    admin_user = get_user_model().objects.create_user(
        "bea", "bea@university.example", "screens", is_staff=True, first_name="Bea", last_name="Finance"
    )
    admin_user.groups.add(Group.objects.get(name=roles.BILLING_ADMIN))
    add_statements_and_queries()
    return env


def add_statements_and_queries() -> None:
    """Statements of the closed months (so the spending page lists them) and a few charge queries
    from PIs, one of them already answered with a credit."""
    from decimal import ROUND_DOWN, Decimal

    from django.contrib.auth import get_user_model
    from django.db.models import Count, Sum

    from accounts.portal.selectors import portal_scope
    from billing.models import PI, Charge
    from statements.queries import services as queries
    from statements.services import statements_generate

    for period in HISTORY:
        statements_generate(period=period, actor_name="demo")
    User = get_user_model()
    reasons = [
        "This instance was stopped on the 3rd; we should not be billed for the whole month.",
        "We do not recognise this resource: is it ours?",
        "The storage discount we were promised is missing.",
    ]
    top = (
        Charge.objects.filter(period__period=DEMO_PERIOD, pi__isnull=False)
        .values("pi_id")
        .annotate(billed=Sum("billed_cost"))
        .order_by("-billed")[: len(reasons)]
    )
    for row, reason in zip(top, reasons, strict=False):
        pi = PI.objects.get(pk=row["pi_id"])
        user = pi.user or User.objects.create_user(pi.email, pi.email, None)
        if pi.user_id is None:
            pi.user = user
            pi.save(update_fields=["user"])
        charge = Charge.objects.filter(pi=pi, period__period=DEMO_PERIOD, review_state="ok").order_by(
            "-billed_cost"
        )[0]
        queries.query_raise(visible=portal_scope(user).q(), charge_id=charge.pk, reason=reason, actor=user)
    first = queries.selectors.queries_open().first()
    if first is not None:
        queries.query_resolve(
            query_id=first.pk,
            decision=queries.Resolution(
                "credited",
                "Agreed: credited the days after it stopped.",
                credit_amount=min(first.amount, Decimal(25)).quantize(Decimal("0.01"), rounding=ROUND_DOWN),
            ),
            actor_name="fran",
        )
    global SPENDING_PROJECT
    SPENDING_PROJECT = (
        Charge.objects.filter(project__isnull=False)
        .values("project_code")
        .annotate(periods=Count("period", distinct=True), billed=Sum("billed_cost"))
        .order_by("-periods", "-billed")
        .values_list("project_code", flat=True)[0]
    )


SPENDING_PROJECT = ""


def session_cookie(username: str = "fran") -> str:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client.cookies["sessionid"].value


def upload_files(out: Path, seed: int) -> list[tuple[str, str]]:
    """Files dropped on the upload page: two good months and one with bad rows."""
    files = []
    for provider, rows in (("aws", 140), ("gcp", 9)):
        path = out / f"{provider}_2026-11.csv"
        subprocess.run(
            [
                sys.executable,
                str(SYNTH),
                str(path),
                f"--rows={rows}",
                "--period=2026-11",
                f"--provider={provider}",
                "--pis=12",
                f"--seed={seed}",
                "--grain=monthly",
            ],
            check=True,
            capture_output=True,
        )
        files.append((path.name, path.read_text()))
    table = list(csv.reader(io.StringIO(files[0][1])))
    header, body = table[0], table[1:7]
    billed = header.index("BilledCost")
    body[1][billed] = "12,50"
    body[4][billed] = "n/a"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *body])
    files.append(("azure_2026-11.csv", buffer.getvalue()))
    return files


# --- a minimal DevTools client (WebSocket over a plain socket) -----------------------------------


class DevTools:
    def __init__(self, ws_url: str) -> None:
        rest = ws_url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        if b" 101 " not in response.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket handshake failed: {response!r}")
        self.next_id = 0

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("devtools connection closed")
            data += chunk
        return data

    def _send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _recv(self) -> str:
        message = b""
        while True:
            first, second = self._recv_exact(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._recv_exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._recv_exact(8))[0]
            payload = self._recv_exact(length)
            if opcode == 0x8:
                raise ConnectionError("devtools closed the connection")
            if opcode in (0x9, 0xA):
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.2)
        raise TimeoutError(expression)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(0.3)
        self.wait_for("document.readyState === 'complete'")
        time.sleep(0.4)

    def screenshot(self, path: Path, width: int) -> None:
        # Lay the page out at the screenshot's width first: its height depends on it.
        self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False
        )
        time.sleep(0.3)
        height = int(str(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 900))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        time.sleep(0.3)
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False
        )
        print(f"  {path.name}: {width}×{height}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - local server
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


DROP_FILES = """
(() => {
  const files = %s;
  const transfer = new DataTransfer();
  files.forEach(([name, text]) => transfer.items.add(new File([text], name, {type: "text/csv"})));
  document.getElementById("ocb-dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
  return files.length;
})()
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance")
    parser.add_argument(
        "--pages",
        default="dashboard,review-queue,upload,spending,queries,period",
        help="comma-separated pages to capture (default: all)",
    )
    args = parser.parse_args()
    pages = set(args.pages.split(","))
    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="ocb-screens-"))
    print(f"building the demo instance in {tmp} ...", flush=True)
    env = build_instance(tmp / "instance")
    cookie = session_cookie()
    admin_cookie = session_cookie("bea")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    profile = tmp / "chromium"
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/admin/login/")
        active = profile / "DevToolsActivePort"
        for _ in range(100):
            if active.is_file() and active.read_text().strip():
                break
            time.sleep(0.2)
        debug_port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list") as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Network.enable")
        tools.call(
            "Network.setCookie", name="sessionid", value=cookie, domain="127.0.0.1", path="/", httpOnly=True
        )
        for theme in ("light", "dark"):
            print(f"{theme}:", flush=True)
            tools.call(
                "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": theme}]
            )
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=1440,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            if "dashboard" in pages:
                tools.open(f"{base}/admin/?period={DEMO_PERIOD}")
                tools.screenshot(out / f"dashboard-{theme}.png", 1440)
            if "review-queue" in pages:
                tools.open(f"{base}/admin/billing/charge/review/?period={DEMO_PERIOD}")
                tools.screenshot(out / f"review-queue-{theme}.png", 1440)
            # Issue 14's pages at 1280 px.
            if "spending" in pages:
                tools.open(f"{base}/admin/spending/project/?project={SPENDING_PROJECT}")
                tools.screenshot(out / f"spending-project-{theme}.png", 1280)
            if "queries" in pages:
                tools.open(f"{base}/admin/statements/chargequery/?state=all")
                tools.screenshot(out / f"queries-{theme}.png", 1280)
            if "period" in pages:  # the period page with its statement runs (preview, issue, send)
                from billing.models import BillingPeriod

                period_pk = BillingPeriod.objects.get(period=DEMO_PERIOD).pk
                for value in (admin_cookie, cookie):  # as a billing admin, then back to the reviewer
                    tools.call(
                        "Network.setCookie",
                        name="sessionid",
                        value=value,
                        domain="127.0.0.1",
                        path="/",
                        httpOnly=True,
                    )
                    if value == admin_cookie:
                        tools.open(f"{base}/admin/billing/billingperiod/{period_pk}/change/")
                        tools.screenshot(out / f"period-{theme}.png", 1280)
        for theme, seed in (("light", 101), ("dark", 202)):
            if "upload" not in pages:
                break
            tools.call(
                "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": theme}]
            )
            tools.open(f"{base}/admin/billing/import/upload/")
            files = upload_files(tmp, seed)
            tools.evaluate(DROP_FILES % json.dumps(files))
            tools.wait_for("document.querySelectorAll('#ocb-queue tbody tr').length === 3")
            tools.wait_for("!document.getElementById('ocb-start').disabled")
            tools.evaluate("document.getElementById('ocb-start').click(), true")
            tools.wait_for(
                "document.getElementById('ocb-summary').textContent.includes('processed')", timeout=120
            )
            waiting = [(f"storage_2026-11{'' if theme == 'light' else '-rerun'}.csv", "BillingPeriodStart\n")]
            tools.evaluate(DROP_FILES % json.dumps(waiting))
            tools.wait_for("document.querySelectorAll('#ocb-queue tbody tr').length === 4")
            time.sleep(0.8)  # the source/period guess arrives
            tools.screenshot(out / f"upload-{theme}.png", 1440)
    finally:
        browser.terminate()
        server.terminate()
        browser.wait(timeout=20)
        server.wait(timeout=20)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    main()
