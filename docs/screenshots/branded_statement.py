"""Render a branded statement of the demo month to docs/screenshots/statement-branded.pdf (and
.png with poppler's pdftoppm when it is installed).

    OPENCHARGEBACK_DATA_DIR=/tmp/demo openchargeback demo
    OPENCHARGEBACK_DATA_DIR=/tmp/demo openchargeback shell -c "exec(open('docs/screenshots/branded_statement.py').read())"

The branding is set on that scratch installation only; the PDF is rendered in memory from the
statement as issued (no new version: branding is presentation).
"""

import shutil
import subprocess
from pathlib import Path

from billing import branding, services
from billing.models import PI
from statements.models import Statement
from statements.pdf import render_statement_pdf
from statements.services import statement_pdf_data

LOGO = b"""<svg xmlns="http://www.w3.org/2000/svg" width="220" height="56" viewBox="0 0 220 56">
<rect x="2" y="4" width="44" height="48" rx="6" fill="#7a1f3d"/>
<path d="M12 40 L24 14 L36 40 Z" fill="#ffffff"/><rect x="18" y="32" width="12" height="8" fill="#7a1f3d"/>
<text x="56" y="26" font-family="Helvetica" font-weight="bold" font-size="18" fill="#7a1f3d">Northfield</text>
<text x="56" y="46" font-family="Helvetica" font-size="14" fill="#555555">University</text></svg>"""

services.billing_settings_update(
    organization_name="Northfield University Research Computing",
    organization_address="Science Park, Building 4\n1 College Road, Northfield NF1 2AB",
    contact_line="Tel. +1 555 0100 · rc.northfield.example/billing",
    contact_email="rc-billing@northfield.example",
    accent_color="#7a1f3d",
    payment_instructions=(
        "Internal accounts are charged by journal transfer; no action is needed. External "
        "collaborators: pay by bank transfer to Northfield University, account 12345678, "
        "quoting the statement number."
    ),
    statement_footer="Northfield University Research Computing · VAT no. GB 123 4567 89",
    logo=LOGO,
)
statement = Statement.objects.exclude(state="superseded").order_by("-billed_total")[0]
branding.period_statement_note_set(
    period=statement.period.period,
    note="From next month storage is billed per TiB-month; see rc.northfield.example/prices.",
)
statement.period.refresh_from_db()
name = statement.pi_email.split("@")[0].replace(".", " ").title()
PI.objects.filter(pk=statement.pi_id).update(name=name)
statement.pi_name = name  # as a statement issued after the PI's name was entered shows it
out = Path("docs/screenshots/statement-branded.pdf")
out.write_bytes(render_statement_pdf(statement_pdf_data(statement)))
print(f"wrote {out} ({statement.label})")
if shutil.which("pdftoppm"):
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "110",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(out),
            str(out.with_suffix("")),
        ],
        check=True,
    )
    print(f"wrote {out.with_suffix('.png')}")
else:
    print("pdftoppm not installed (apt-get install poppler-utils): no PNG")
