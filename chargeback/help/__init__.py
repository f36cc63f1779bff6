"""The admin's help pages and system page (top layer: they read billing settings and statuses)."""
