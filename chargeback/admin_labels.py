"""Human words on every admin page: list pages titled with the model's plural name ("Statements",
not Django's "Select statement to view"), and the admin home's app list in the order a finance
user works through it, with the technical apps grouped under "System"."""

from __future__ import annotations

from typing import Any

from .admin_helpers import with_mixin_first

# Apps in the order of the month's work; any other app comes after these, then the System group.
APP_ORDER = ("billing", "statements", "journals", "accounts")
# Technical apps: users and groups, login lockouts, the audit log.
SYSTEM_APPS = ("auth", "axes", "auditlog")
SYSTEM_LABEL = "system"
# Within billing, the screens of the monthly cycle first, then reference data, then settings.
MODEL_ORDER = {
    "billing": (
        "BillingPeriod",
        "Charge",
        "ReviewLog",
        "Import",
        "CollectionPoint",
        "CollectedObject",
        "PI",
        "Project",
        "AccountMapping",
        "Source",
        "FlagRule",
        "Rate",
        "Subsidy",
        "UsageFile",
        "Rerate",
        "BillingSettings",
    ),
    "statements": ("Statement", "Delivery", "StatementRun"),
    "journals": ("JournalExport", "JournalFormat", "JournalSettings"),
}


class HumanTitleMixin:
    """A list page's title is the model's plural name, whatever the user may do with it."""

    def changelist_view(self, request: Any, extra_context: dict[str, Any] | None = None) -> Any:
        opts = self.model._meta  # type: ignore[attr-defined]
        name = str(opts.verbose_name_plural)
        context = {"title": name[:1].upper() + name[1:], **(extra_context or {})}
        return super().changelist_view(request, context)  # type: ignore[misc]


def with_human_title(admin_class: type) -> type:
    return with_mixin_first(admin_class, HumanTitleMixin)


def ordered_app_list(app_list: list[dict[str, Any]], system_url: str | None = None) -> list[dict[str, Any]]:
    """Billing first, then statements, journals and accounts; auth, axes and auditlog merged into one
    "System" group at the end (linking to the system page when given)."""
    rank = {label: i for i, label in enumerate(APP_ORDER)}
    main = [app for app in app_list if app["app_label"] not in SYSTEM_APPS]
    main.sort(key=lambda app: (rank.get(app["app_label"], len(rank)), app["name"]))
    for app in main:
        order = MODEL_ORDER.get(app["app_label"])
        if order:
            position = {name: i for i, name in enumerate(order)}
            app["models"].sort(key=lambda m: (position.get(m["object_name"], len(position)), m["name"]))
    system_models = [
        {**model, "name": f"{model['name']}"}
        for app in app_list
        if app["app_label"] in SYSTEM_APPS
        for model in app["models"]
    ]
    if system_models:
        main.append(
            {
                "name": "System",
                "app_label": SYSTEM_LABEL,
                "app_url": system_url or system_models[0]["admin_url"] or "",
                "has_module_perms": True,
                "models": system_models,
            }
        )
    return main
