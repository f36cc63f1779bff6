from django.apps import AppConfig


class JournalsConfig(AppConfig):
    name = "journals"
    verbose_name = "Journals"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from . import models

        auditlog.register(models.JournalSettings)
        auditlog.register(models.JournalFormat)
        auditlog.register(models.JournalExport, exclude_fields=["statements"])
