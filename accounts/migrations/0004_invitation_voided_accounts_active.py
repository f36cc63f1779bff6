"""Invitations can be voided (an account disabled before its link was used), and `is_active` now
means only "not disabled": portal users that were created inactive by an import and never set up
(no password, never signed in, no invitation accepted) become active. Nobody can sign in as them
until a password is set, exactly as before."""

from django.db import migrations, models


def activate_never_set_up(apps, schema_editor):
    User = apps.get_model("auth", "User")
    Invitation = apps.get_model("accounts", "Invitation")
    accepted = Invitation.objects.filter(accepted_at__isnull=False).values("user_id")
    candidates = User.objects.filter(
        is_active=False, is_staff=False, is_superuser=False, last_login__isnull=True, password__startswith="!"
    ).exclude(pk__in=accepted)
    candidates.update(is_active=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_role_groups"),
    ]

    operations = [
        migrations.AddField(
            model_name="invitation",
            name="voided_at",
            field=models.DateTimeField(
                blank=True, help_text="When the account was disabled before the link was used.", null=True
            ),
        ),
        migrations.RunPython(activate_never_set_up, migrations.RunPython.noop),
    ]
