"""The project boots: settings load and the admin answers. (That the migrations are complete is
tests/chargeback/test_upgrade.py::test_models_and_migrations_agree.)"""

import pytest


@pytest.mark.django_db
def test_admin_login_page(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"OpenChargeback" in response.content
