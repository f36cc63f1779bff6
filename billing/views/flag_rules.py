"""Trying a flag rule before saving it; re-evaluating a period's flags."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts import roles
from chargeback.errors import Refused

from .. import selectors, tasks
from ..forms import (
    ReevaluateForm,
)
from ..models import Charge
from ._common import _admin_context, selected_period


def flag_rule_test(request: HttpRequest, model_admin: Any, object_id: str | None) -> HttpResponse:
    """The rule form posted with "Test": show what it would flag, save nothing."""
    obj = model_admin.get_object(request, object_id) if object_id else None
    if object_id and obj is None:
        raise Http404
    allowed = (
        model_admin.has_change_permission(request, obj) if obj else model_admin.has_add_permission(request)
    )
    if not allowed:
        raise PermissionDenied
    form_class = model_admin.get_form(request, obj, change=obj is not None)
    form = form_class(request.POST, instance=obj)
    preview = None
    if form.is_valid():
        data = form.cleaned_data
        period = data.get("test_period") or selected_period(request)
        if period is None:
            form.add_error("test_period", "There is no period to test against yet.")
        else:
            try:
                preview = selectors.flag_rule_preview(
                    period=period,
                    pattern=data["pattern"],
                    fields=list(data["fields"]),
                    mode=data["mode"],
                    source_id=data["source"].pk if data.get("source") else None,
                )
            except Refused as exc:
                form.add_error("pattern", str(exc))
    fieldsets = model_admin.get_fieldsets(request, obj)
    admin_form = helpers.AdminForm(
        form, list(fieldsets), {}, model_admin.get_readonly_fields(request, obj), model_admin=model_admin
    )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": ("Change" if obj else "Add") + " flag rule",
        "subtitle": str(obj) if obj else None,
        "adminform": admin_form,
        "object_id": object_id,
        "original": obj,
        "is_popup": False,
        "to_field": None,
        "media": model_admin.media + admin_form.media,
        "inline_admin_formsets": [],
        "errors": helpers.AdminErrorList(form, []),
        "preserved_filters": model_admin.get_preserved_filters(request),
        "rule_preview": preview,
        "currency": selectors.currency_code(),
        "state_labels": dict(Charge.ReviewState.choices),
    }
    return model_admin.render_change_form(request, context, add=obj is None, change=obj is not None, obj=obj)


def period_reevaluate(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Run the active rules again over a period's undecided (ok/flagged) charges."""
    if not roles.can_review(request.user):
        raise PermissionDenied
    period = selected_period(request)
    initial = {"period": period.period} if period and not period.is_finalized else {}
    form = ReevaluateForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        chosen = form.cleaned_data["period"]
        try:
            result = tasks.period_reevaluate_flags.delay(chosen.period, request.user.pk)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())
        if settings.CELERY_TASK_ALWAYS_EAGER:
            changed = result.get()
            messages.success(
                request,
                f"Flags of {chosen.period} re-evaluated: {changed:,} charge{'s' if changed != 1 else ''} changed state.",
            )
        else:
            messages.info(
                request, f"Re-evaluation of {chosen.period} queued; the review queue updates when it ends."
            )
        return HttpResponseRedirect(reverse("admin:billing_charge_review") + f"?period={chosen.period}")
    context = _admin_context(
        request,
        model_admin,
        "Re-evaluate flags",
        form=form,
        rules=list(
            model_admin.model.objects.filter(is_active=True).select_related("source").order_by("name")
        ),
    )
    return TemplateResponse(request, "admin/billing/flagrule/reevaluate.html", context)
