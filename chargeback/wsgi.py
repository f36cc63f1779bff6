import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chargeback.settings")
application = get_wsgi_application()

from chargeback.secret_key import secret_key_problem  # noqa: E402  (needs the settings loaded)

if problem := secret_key_problem():
    # One line, not a traceback, in whatever server loads this module (gunicorn, uWSGI, mod_wsgi).
    print(f"OpenChargeback will not start: {problem}", file=sys.stderr, flush=True)
    # 4 is gunicorn's "application failed to load": its master stops instead of restarting workers.
    raise SystemExit(4)
