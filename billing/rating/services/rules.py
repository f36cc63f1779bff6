"""Rates and subsidies: adding and editing them.

Each function is one transaction and refuses bad input with `Refused` (nothing written), so the
CLI and the admin obey the same rules.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction

from billing import selectors as billing_selectors
from billing.models import Source
from billing.services import source_create
from chargeback.actors import actor_fields
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.money import MONEY_PLACES

from ..models import Rate, Subsidy
from ..units import PRICE_PLACES, QUANTITY_PLACES, UNITS


def _decimal(value: Any, what: str, places: int, *, positive: bool = False) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise Refused(f"invalid {what} {value!r}: not a number") from None
    if not number.is_finite():
        raise Refused(f"invalid {what} {value!r}: not a number")
    if number < 0 or (positive and number == 0):
        raise Refused(f"invalid {what} {value!r}: must be {'more than' if positive else 'at least'} 0")
    if number.adjusted() >= 13:
        raise Refused(f"invalid {what} {value!r}: too large")
    try:
        exact = number.quantize(Decimal(1).scaleb(-places)) == number
    except InvalidOperation:
        exact = False
    if not exact:
        raise Refused(f"invalid {what} {value!r}: at most {places} decimal places and 18 digits")
    return number


def _month(value: str | None, what: str) -> str:
    try:
        return billing_selectors.validate_period(value or "")
    except Refused:
        raise Refused(f"invalid {what} {value!r}: use YYYY-MM") from None


def _source(slug: str, *, create: bool) -> tuple[Source, bool]:
    slug = (slug or "").strip().lower()
    found = Source.objects.filter(slug=slug).first()
    if found is not None:
        return found, False
    if not create:
        return billing_selectors.source_get(slug), False  # raises with the known sources
    return source_create(slug=slug), True


# --- rates ------------------------------------------------------------------------------------


@transaction.atomic
def rate_add(
    *,
    source: str,
    unit: str,
    price: Any,
    tier: str = "",
    effective_from: str,
    free_quantity: Any = 0,
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> tuple[Rate, bool]:
    """Add a rate from a month on; returns (rate, whether the source was created for it).

    A newer rate for the same source/unit/tier takes over from its month; a rate for exactly the
    same source, unit, tier and month already there is refused (edit it instead).
    """
    unit = (unit or "").strip().lower()
    if unit not in UNITS:
        raise Refused(f"unknown unit {unit!r}: use one of {', '.join(UNITS)}")
    price_value = _decimal(price, "price", PRICE_PLACES)
    free_value = _decimal(free_quantity or 0, "free allowance", QUANTITY_PLACES)
    month = _month(effective_from, "month")
    source_obj, created = _source(source, create=True)
    try:
        with transaction.atomic():
            rate = Rate.objects.create(
                source=source_obj,
                unit=unit,
                tier=(tier or "").strip(),
                price=price_value,
                free_quantity=free_value,
                effective_from=month,
                note=(note or "").strip(),
                **actor_fields(actor, actor_name),
            )
    except IntegrityError:
        tier_text = f" tier {tier}" if tier else ""
        raise Refused(
            f"{source_obj.slug} already has a {unit}{tier_text} rate from {month}; edit it in the admin "
            "or give another --from month"
        ) from None
    return rate, created


RATE_EDITABLE = ("price", "free_quantity", "note")


@transaction.atomic
def rate_update(*, rate_id: int, actor: Any = None, actor_name: str = "", **changes: Any) -> Rate:
    """Change a rate's price, free allowance or note. Periods already rated keep their charges
    until they are rated again (`usage rerate`)."""
    rate = Rate.objects.select_for_update().filter(pk=rate_id).first()
    if rate is None:
        raise Refused(f"no rate #{rate_id}")
    unknown = set(changes) - set(RATE_EDITABLE)
    if unknown:
        raise Refused(
            f"cannot change {', '.join(sorted(unknown))} of a rate; add a new rate from a month instead"
        )
    if "price" in changes:
        rate.price = _decimal(changes["price"], "price", PRICE_PLACES)
    if "free_quantity" in changes:
        rate.free_quantity = _decimal(changes["free_quantity"] or 0, "free allowance", QUANTITY_PLACES)
    if "note" in changes:
        rate.note = (changes["note"] or "").strip()
    fields = actor_fields(actor, actor_name)
    rate.actor, rate.actor_name = fields["actor"], fields["actor_name"]
    rate.save()
    return rate


@transaction.atomic
def rate_delete(*, rate_id: int) -> None:
    """Remove a rate that never priced a charge (one that did stays: add a newer rate instead)."""
    rate = Rate.objects.filter(pk=rate_id).first()
    if rate is None:
        raise Refused(f"no rate #{rate_id}")
    used = rate.charge_ratings.count()
    if used:
        raise Refused(
            f"rate {rate} priced {used} charge{'s' if used != 1 else ''}; it stays for the record. "
            "Add a newer rate from a month to replace it."
        )
    rate.delete()


# --- subsidies --------------------------------------------------------------------------------


def _subsidy_values(values: dict[str, Any]) -> dict[str, Any]:
    """Checked and normalised subsidy fields (only those given)."""
    clean: dict[str, Any] = {}
    if "name" in values:
        name = (values["name"] or "").strip()
        if not name:
            raise Refused("a subsidy needs a name")
        clean["name"] = name
    if "percent" in values:
        percent = _decimal(values["percent"], "percent", 2, positive=True)
        if percent > 100:
            raise Refused(f"invalid percent {values['percent']!r}: at most 100")
        clean["percent"] = percent
    if "source" in values:
        clean["source"] = billing_selectors.source_get(values["source"]) if values["source"] else None
    if "tier" in values:
        clean["tier"] = (values["tier"] or "").strip()
    if "projects" in values:
        clean["projects"] = sorted({p.strip() for p in values["projects"] or [] if p and p.strip()})
    if "pis" in values:
        emails = sorted({p.strip().lower() for p in values["pis"] or [] if p and p.strip()})
        bad = [e for e in emails if not is_plain_email(e)]  # the one PI email rule
        if bad:
            raise Refused(f"invalid PI email {', '.join(bad)}")
        clean["pis"] = emails
    if "cap" in values:
        cap = values["cap"]
        clean["cap"] = None if cap in (None, "") else _decimal(cap, "cap", MONEY_PLACES)
    if "effective_from" in values:
        clean["effective_from"] = _month(values["effective_from"], "--from month")
    if "effective_until" in values:
        until = values["effective_until"]
        clean["effective_until"] = _month(until, "--until month") if until else ""
    if "position" in values:
        try:
            clean["position"] = max(0, int(values["position"]))
        except (TypeError, ValueError):
            raise Refused(f"invalid position {values['position']!r}: a whole number") from None
    if "note" in values:
        clean["note"] = (values["note"] or "").strip()
    return clean


SUBSIDY_FIELDS = (
    "name",
    "percent",
    "source",
    "tier",
    "projects",
    "pis",
    "cap",
    "effective_from",
    "effective_until",
    "position",
    "note",
)


def _check_months(subsidy: Subsidy) -> None:
    if subsidy.effective_until and subsidy.effective_until < subsidy.effective_from:
        raise Refused(
            f"subsidy {subsidy.name!r} would end ({subsidy.effective_until}) before it starts "
            f"({subsidy.effective_from})"
        )


@transaction.atomic
def subsidy_add(
    *,
    name: str,
    percent: Any,
    effective_from: str,
    source: str | None = None,
    tier: str = "",
    projects: list[str] | None = None,
    pis: list[str] | None = None,
    cap: Any = None,
    effective_until: str | None = None,
    position: int = 100,
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> Subsidy:
    """Add a named subsidy (see subsidies.py for how subsidies apply)."""
    values = _subsidy_values(
        {
            "name": name,
            "percent": percent,
            "source": source,
            "tier": tier,
            "projects": projects,
            "pis": pis,
            "cap": cap,
            "effective_from": effective_from,
            "effective_until": effective_until,
            "position": position,
            "note": note,
        }
    )
    subsidy = Subsidy(**values, **actor_fields(actor, actor_name))
    _check_months(subsidy)
    try:
        with transaction.atomic():
            subsidy.save()
    except IntegrityError:
        raise Refused(f"a subsidy named {values['name']!r} already exists") from None
    return subsidy


@transaction.atomic
def subsidy_update(*, subsidy_id: int, actor: Any = None, actor_name: str = "", **changes: Any) -> Subsidy:
    """Change a subsidy. Periods already rated keep their charges until they are rated again."""
    subsidy = Subsidy.objects.select_for_update().filter(pk=subsidy_id).first()
    if subsidy is None:
        raise Refused(f"no subsidy #{subsidy_id}")
    unknown = set(changes) - set(SUBSIDY_FIELDS)
    if unknown:
        raise Refused(f"cannot change {', '.join(sorted(unknown))} of a subsidy")
    for name, value in _subsidy_values(changes).items():
        setattr(subsidy, name, value)
    _check_months(subsidy)
    fields = actor_fields(actor, actor_name)
    subsidy.actor, subsidy.actor_name = fields["actor"], fields["actor_name"]
    try:
        with transaction.atomic():
            subsidy.save()
    except IntegrityError:
        raise Refused(f"a subsidy named {subsidy.name!r} already exists") from None
    return subsidy
