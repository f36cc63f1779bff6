"""The role groups (Billing admin, Reviewer, Viewer, PI) with the permissions of accounts.roles.

Permissions are normally created after migrate (post_migrate); on a fresh database they are
created here first, so the groups get them. accounts.roles stays the single source: after every
migrate, accounts.services.roles_ensure() brings the groups back to it.
"""

from django.db import migrations


def create_role_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    from accounts import roles

    using = schema_editor.connection.alias
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    roles.sync_groups(Group, Permission, strict=False)


def remove_role_groups(apps, schema_editor):
    from accounts import roles

    apps.get_model("auth", "Group").objects.filter(name__in=list(roles.ROLE_PERMISSIONS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_invitation_delegation"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("billing", "0001_initial"),
        ("statements", "0001_initial"),
        ("journals", "0001_initial"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(create_role_groups, remove_role_groups)]
