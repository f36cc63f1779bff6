from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from chargeback import commands

        from . import models, selectors

        commands.currency_source = lambda: selectors.billing_settings_get().currency_code

        # Charges are not registered: they change in bulk (imports, bulk review), and every
        # review decision is recorded explicitly in ReviewLog instead.
        for model in (
            models.BillingSettings,
            models.Source,
            models.BillingPeriod,
            models.PI,
            models.Project,
            models.AccountMapping,
            models.Import,
            models.FlagRule,
            models.Rate,
            models.Subsidy,
            models.UsageFile,
            models.Rerate,
            models.CollectionPoint,
        ):
            auditlog.register(model)
