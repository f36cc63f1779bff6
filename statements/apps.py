from django.apps import AppConfig


class StatementsConfig(AppConfig):
    name = "statements"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from billing import extensions

        from . import models, selectors

        # Finalizing a period needs its statements current, and its page shows them.
        extensions.finalize_check_register(selectors.period_statement_problems)
        extensions.period_panel_register("statements", selectors.period_statements_summary)
        extensions.period_panel_register("statement_runs", selectors.period_statement_runs)

        # Lines and the detail snapshot are part of an immutable version: the statement's own
        # entries (issued, sent, superseded) say what happened to it.
        auditlog.register(models.Statement, exclude_fields=["details", "content_hash"])
        auditlog.register(models.Delivery)
        auditlog.register(models.ChargeQuery)
        # A run's state changes are audited; its progress counts change every few seconds.
        auditlog.register(
            models.StatementRun,
            exclude_fields=[
                "pdfs_rendered",
                "pdfs_failed",
                "emails_sent",
                "emails_failed",
                "progressed_at",
                "statement_ids",
                "delivery_ids",
                "result",
            ],
        )
