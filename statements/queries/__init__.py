"""Charge queries (disputes): a PI or delegate asks about a charge or a statement line in the
portal; a reviewer answers and resolves it in the admin (the charge stands, approve, reject,
correct attribution, or a credit on the next statement version); the PI is emailed once.

The models belong to the statements app (imported at the end of statements/models.py): a query
points at charges and statement lines, so it lives above billing, which never imports it.
"""
