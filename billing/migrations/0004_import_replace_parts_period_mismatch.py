"""Imports: `replace` instead of `append` (a different file now adds to its source and period by
default), `part_of` (a file spanning several billing periods is one import per period), and the
`period_mismatch` flag reason (a row of another billing period kept in the one given with -p)."""

import django.db.models.deletion
from django.db import migrations, models

DATA_LOSS_REASON = (
    "Import.append is carried over into Import.replace (its negation) before the column is dropped; "
    "the reverse migration restores it from replace."
)


def replace_from_append(apps, schema_editor):
    # Before this migration an import without `append` replaced every earlier import of its
    # source and period: that is what `replace` now says.
    Import = apps.get_model("billing", "Import")
    Import.objects.filter(append=False).update(replace=True)


def append_from_replace(apps, schema_editor):
    Import = apps.get_model("billing", "Import")
    Import.objects.filter(replace=False).update(append=True)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_rating"),
    ]

    operations = [
        migrations.AddField(
            model_name="import",
            name="replace",
            field=models.BooleanField(
                default=False,
                help_text="Superseded every earlier import of its source and period(s), not only an "
                "earlier import of the same file name.",
            ),
        ),
        migrations.RunPython(replace_from_append, append_from_replace),
        migrations.RemoveField(
            model_name="import",
            name="append",
        ),
        migrations.AddField(
            model_name="import",
            name="part_of",
            field=models.ForeignKey(
                blank=True,
                help_text="The import of the same file that holds its other billing period (a file whose "
                "rows span several periods is one import per period).",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="parts",
                to="billing.import",
            ),
        ),
        migrations.AlterField(
            model_name="chargeflag",
            name="reason",
            field=models.CharField(
                choices=[
                    ("unattributed", "Unattributed"),
                    ("missing_project", "Missing project"),
                    ("missing_fund_org", "Missing fund/org"),
                    ("invalid_fund_org", "Invalid fund/org"),
                    ("project_pi_mismatch", "Project seen under another PI"),
                    ("period_mismatch", "Billing period mismatch"),
                    ("rule", "Flag rule"),
                ],
                max_length=30,
            ),
        ),
    ]
