"""Regular expressions people type run in linear time (RE2): flag rules, the fund/org pattern and
the journal's regexes. `^(a+)+$` over 10,000 ids of 30 a's and a '!' finishes in well under a
second (Python's backtracking engine needs minutes for one), and syntax RE2 lacks is refused when
the pattern is saved, saying which construct."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import time
from collections.abc import Iterator

import pytest

from chargeback.errors import Refused

CATASTROPHIC = "^(a+)+$"
IDS = [f"{'a' * 30}!{n}" for n in range(10_000)]


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer: a backtracking engine never ends."""

    def expired(*args: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_catastrophic_rule_over_10000_ids_is_fast():
    from billing.ingest.flagging import FlagContext, compile_rule
    from billing.models import FlagRule

    rule = FlagRule(pk=1, name="aaa", pattern=CATASTROPHIC, fields=["resource_id"], mode="match")
    context = FlagContext(fund_org_regex=None, rules=(compile_rule(rule),))
    with deadline(5):
        started = time.perf_counter()
        flags = [context.rule_flags({"resource_id": value}, 1) for value in IDS[:50]]
        flags_many = context.rule_flags_many({"resource_id": IDS}, [1] * len(IDS))
        seconds = time.perf_counter() - started
    assert seconds < 0.5, seconds
    assert flags == [[]] * 50 and flags_many == [[]] * len(IDS)
    assert context.rule_flags_many({"resource_id": ["aaaa", "aa!"]}, [1, 1])[0][0].detail == (
        "aaa: resource_id 'aaaa' matches ^(a+)+$"
    )


@pytest.mark.django_db
def test_an_import_with_a_catastrophic_rule_and_fund_org_regex(tmp_path):
    from billing import selectors, services
    from billing.models import Charge

    services.source_create(slug="aws")
    services.flag_rule_save(name="aaa", pattern=CATASTROPHIC, fields=["resource_id", "fund_org"])
    services.billing_settings_update(fund_org_regex="(a+)+")
    path = tmp_path / "aws_2025-01.csv"
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["BillingPeriodStart", "BilledCost", "ResourceId", "ServiceName", "Tags"])
        for n, resource in enumerate(IDS[:2000]):
            tags = json.dumps({"pi_email": "ada@uni.example", "project_id": "p", "fund_org": IDS[n]})
            out.writerow(["2025-01-01", "1", resource, "EC2", tags])
    with deadline(60):
        outcome = services.import_file(path=path, source="aws", period="2025-01")
    assert outcome.charges == 2000
    flagged = Charge.objects.filter(flag_summary="invalid_fund_org").count()
    assert flagged == 2000  # the fund/org regex is a full match: none of these fund/orgs matches
    with deadline(30):
        services.period_reevaluate_flags(period="2025-01")
        preview = selectors.flag_rule_preview(
            period=selectors.period_get("2025-01"), pattern=CATASTROPHIC, fields=["resource_id"], mode="match"
        )
    assert (preview.checked, preview.matched) == (2000, 0)


def test_the_journal_split_regex_is_linear_too():
    from journals.entries import FundOrgSplitter

    splitter = FundOrgSplitter("(?P<fund>(?:a+)+)")
    with deadline(5):
        results = [splitter.split(value) for value in IDS[:200]]
    assert results == [None] * 200
    assert (splitter.split("aaaa") or {})["fund"] == "aaaa"


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("^(?=.*gpu).*$", "lookahead (?=…) is not supported: patterns run on RE2"),
        ("(?<!x)gpu", "negative lookbehind (?<!…) is not supported"),
        (r"(a)\1", "backreferences such as \\1 are not supported"),
        ("a++", "possessive quantifiers"),
        ("(?>a)b", "atomic groups"),
        ("(unclosed", "invalid regular expression: missing )"),
    ],
)
@pytest.mark.django_db
def test_unsupported_syntax_is_refused_when_saved(pattern, says):
    from billing import services
    from journals import services as journal_services

    with pytest.raises(Refused) as caught:
        services.flag_rule_save(name="r", pattern=pattern, fields=["resource_id"])
    assert says in str(caught.value)
    with pytest.raises(Refused) as caught:
        services.billing_settings_update(fund_org_regex=pattern)
    assert says in str(caught.value)
    for name in ("fund_org_regex", "account_regex"):
        with pytest.raises(Refused) as caught:
            journal_services.journal_settings_update(**{name: pattern})
        assert says in str(caught.value)


@pytest.mark.django_db
def test_the_admin_form_explains_unsupported_syntax(client):
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    from billing.models import FlagRule

    admin = get_user_model().objects.create_superuser("root", "root@example.edu", "x" * 20)
    client.force_login(admin)
    response = client.post(
        reverse("admin:billing_flagrule_add"),
        {"name": "r", "pattern": r"(\w+)\1", "fields": ["resource_id"], "mode": "match", "is_active": "on"},
    )
    assert response.status_code == 200
    assert "Backreferences such as \\1 are not supported" in response.content.decode()
    assert not FlagRule.objects.exists()


def test_named_groups_only_in_the_journal_split_regex():
    from journals.entries import regex_errors

    assert regex_errors(r"^(?P<fund>\d{6})-(?P<orgn>\d{4})$", named_groups=True) == []
    assert "unnamed groups" in regex_errors(r"^(\d{6})-(?P<orgn>\d{4})$", named_groups=True)[0]
    assert regex_errors(r"^(?:\d{6})-(?P<orgn>\d{4})$", named_groups=True) == []


def test_linear_regex_semantics():
    from chargeback.regex import LinearRegex

    rule = LinearRegex("(?i)gpu")
    assert rule.search("HPC GPU") and not rule.fullmatch("HPC GPU") and rule.fullmatch("Gpu")
    assert list(rule.search_many(["gpu", None, "cpu"])) == [True, False, False]
    assert LinearRegex("a|b").fullmatch("b") and not LinearRegex("a|b").fullmatch("ab")
    assert not LinearRegex("x$").fullmatch("x\n")  # $ is the end of the value, as in fullmatch
    split = LinearRegex(r"(?P<fund>\d{6})-(?P<orgn>\d{4})?")
    assert split.fullmatch_groups("123456-") == {"fund": "123456", "orgn": ""}
    assert split.fullmatch_groups("123456-7890") == {"fund": "123456", "orgn": "7890"}
    assert split.fullmatch_groups("x") is None
