"""A PI email is a plain `local@domain` address or nothing: `x<victim@evil.example>` (an email
library sends that to the address inside the brackets) and `<script>…@x` from a billing file
never become a PI, are flagged "invalid PI email", and nobody is ever emailed at them."""

from __future__ import annotations

import pytest
from django.core import mail

from billing import services
from billing.models import PI, Charge, ChargeFlag, FlagReason
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from tests.billing.test_ingest import charges_of, focus_row, ingest, tags, write_focus

pytestmark = pytest.mark.django_db
HOSTILE = ["x<victim@evil.example>", "<script>alert(1)</script>@x.example", "Ada <ada@uni.example>", "a@b"]


@pytest.fixture
def aws(db):
    return services.source_create(slug="aws")


@pytest.mark.parametrize("value", ["ada@uni.example", "first.last+lab@cs.uni.example", "ADA@UNI.EXAMPLE"])
def test_plain_addresses(value):
    assert is_plain_email(value)


@pytest.mark.parametrize(
    "value", [*HOSTILE, "", "a b@x.example", "müller@uni.example", "a@x.example\n", "a@-x.example"]
)
def test_anything_else_is_not_an_address(value):
    assert not is_plain_email(value)


def test_a_hostile_pi_tag_is_flagged_and_names_nobody(aws, tmp_path, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    rows = [
        focus_row(ResourceId=f"r-{n}", Tags=tags(pi_email=value, project_id=f"p-{n}", fund_org="F-1"))
        for n, value in enumerate(HOSTILE)
    ]
    charges = charges_of(ingest(write_focus(tmp_path / "aws_2025-01.csv", rows)))
    assert [c.review_state for c in charges] == ["flagged"] * len(HOSTILE)
    assert all(c.pi_id is None and c.flag_summary == "invalid_pi_email, unattributed" for c in charges)
    details = set(
        ChargeFlag.objects.filter(reason=FlagReason.INVALID_PI_EMAIL).values_list("detail", flat=True)
    )
    assert f"{HOSTILE[0]!r} is not a plain address (local@domain)" in details
    assert not PI.objects.exists()
    # Statements go to PIs only, and there is none: nobody is emailed.
    from statements import services as statement_services

    services.charges_approve(period="2025-01", note="checked")
    statement_services.statements_generate(period="2025-01")
    statement_services.deliveries_queue(period="2025-01")
    assert mail.outbox == []


def test_the_flag_stays_through_re_evaluation_until_corrected(aws, tmp_path):
    rows = [focus_row(Tags=tags(pi_email=HOSTILE[0], project_id="p-1", fund_org="F-1"))]
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws_2025-01.csv", rows)))
    services.period_reevaluate_flags(period="2025-01")
    charge.refresh_from_db()
    assert charge.flag_summary == "invalid_pi_email, unattributed"
    services.charge_correct_attribution(
        charge_id=charge.pk, pi_email="victim@evil.example", project_id="p-1", fund_org="F-1"
    )
    charge.refresh_from_db()
    assert charge.flag_summary == "" and charge.pi.email == "victim@evil.example"


@pytest.mark.parametrize("value", HOSTILE)
def test_services_refuse_a_hostile_address(aws, value):
    with pytest.raises(Refused, match="invalid PI email"):
        services.account_mapping_set(sub_account_id="1", project_id="lab", pi_email=value)
    from billing.services import users as user_services

    with pytest.raises(Refused, match="invalid email address"):
        user_services.user_add(email=value, role_names=["viewer"])
    assert not PI.objects.exists()


def test_a_pi_stored_before_with_a_hostile_address_is_never_emailed(aws, tmp_path, settings):
    """An installation may hold such a PI from before this check: its delivery fails, unsent."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    rows = [focus_row(Tags=tags(pi_email="ada@uni.example", project_id="p-1", fund_org="F-1"))]
    ingest(write_focus(tmp_path / "aws_2025-01.csv", rows))
    PI.objects.filter(email="ada@uni.example").update(email=HOSTILE[0])
    from statements import services as statement_services
    from statements import tasks
    from statements.models import Delivery

    outcome = statement_services.statements_generate(period="2025-01")
    tasks.dispatch(outcome.to_render)
    queued = statement_services.deliveries_queue(period="2025-01")
    for delivery in queued.queued:
        assert statement_services.delivery_send(delivery_id=delivery.pk) == Delivery.State.FAILED
    assert mail.outbox == []
    failed = Delivery.objects.get()
    assert failed.state == Delivery.State.FAILED and "invalid PI email" in failed.error
    assert Charge.objects.count() == 1
