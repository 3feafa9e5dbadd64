"""WSGI entry point: ponte --app-dir apps django_site.wsgi:application"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

# Create the SQLite tables on first start, so the demo runs with no separate setup step.
call_command("migrate", interactive=False, verbosity=0)

application = get_wsgi_application()
