from django.apps import AppConfig


class JournalsConfig(AppConfig):
    name = "journals"
    verbose_name = "Journals"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from billing import extensions

        from . import models, selectors

        # Approving a charge with a fund/org the journal cannot split is not enough: say so.
        extensions.approval_check_register(selectors.charges_journal_objections)
        auditlog.register(models.JournalSettings)
        auditlog.register(models.JournalFormat)
        auditlog.register(models.JournalExport, exclude_fields=["statements"])
