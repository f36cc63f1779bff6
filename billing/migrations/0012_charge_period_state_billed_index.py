"""The (period, review state) index of charges holds the id and the billed amount too: the flagged
and rejected sums of a period (its totals after a review decision, the review queue's groups) read
the index alone instead of tens of thousands of charge rows, and a state's charges still come
newest first from it (the id before the amount)."""

from django.db import migrations, models

NEW_INDEX = "charge_period_state_billed"


def analyze_the_new_index(apps, schema_editor):
    """SQLite: when ANALYZE has measured the charge table, measure the new index too. Among
    measured indexes, one without figures looks far more selective than it is, and the planner
    picks it for pages it slows down (a million-charge list sorted in full)."""
    connection = schema_editor.connection
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        if cursor.fetchone() is None:
            return
        cursor.execute("SELECT 1 FROM sqlite_stat1 WHERE tbl = 'billing_charge' LIMIT 1")
        if cursor.fetchone() is not None:
            cursor.execute(f'ANALYZE "{NEW_INDEX}"')


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0011_charge_text_search_index"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="charge",
            name="charge_period_state",
        ),
        migrations.AddIndex(
            model_name="charge",
            index=models.Index(fields=["period", "review_state", "id", "billed_cost"], name=NEW_INDEX),
        ),
        migrations.RunPython(analyze_the_new_index, migrations.RunPython.noop, elidable=True),
    ]
