"""URLs of the portal, mounted at /portal/ (namespace "portal")."""

from __future__ import annotations

from django.urls import path, register_converter

from . import queries, views
from .selectors import NO_PROJECT


class ProjectKeyConverter:
    """A project's pk, or "none" for a PI's charges without a project."""

    regex = rf"[0-9]+|{NO_PROJECT}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: object) -> str:
        return str(value)


class PeriodConverter:
    regex = r"[0-9]{4}-(?:0[1-9]|1[0-2])"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: object) -> str:
        return str(value)


register_converter(ProjectKeyConverter, "project")
register_converter(PeriodConverter, "period")

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("password/set/<uidb64>/<token>/", views.SetPasswordView.as_view(), name="set_password"),
    path("periods/<period:period>/", views.period_detail, name="period"),
    path("statements/<int:pk>/", views.statement_detail, name="statement"),
    path("statements/<int:pk>/pdf/", views.statement_pdf, name="statement_pdf"),
    path("periods/<period:period>/projects/<project:project>/charges/", views.charges, name="charges"),
    path(
        "periods/<period:period>/projects/<project:project>/charges.csv",
        views.charges_csv,
        name="charges_csv",
    ),
    path("delegates/", views.delegates, name="delegates"),
    # Charge queries (disputes): accounts/queries.py
    path("queries/", queries.queries, name="queries"),
    path("queries/<int:pk>/", queries.query_detail, name="query"),
    path("charges/<int:charge_id>/query/", queries.query_charge, name="query_charge"),
    path("statement-lines/<int:line_id>/query/", queries.query_line, name="query_line"),
    path("delegates/<int:pk>/revoke/", views.delegation_revoke, name="delegation_revoke"),
    path("delegates/users/<int:user_id>/revoke/", views.delegate_revoke_all, name="delegate_revoke_all"),
]
