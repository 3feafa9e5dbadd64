"""ASGI entry point of the same Django project: ponte --app-dir apps django_site.asgi:application"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

import django  # noqa: E402

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("migrate", interactive=False, verbosity=0)

application = get_asgi_application()
