"""Celery finds the project's own tasks here (autodiscovery reads `<app>.tasks`); they live in
chargeback.operations. The task names stay `chargeback.tasks.*` (the beat schedule uses them)."""

from chargeback.operations.reminders import remind_open_periods

__all__ = ["remind_open_periods"]
