from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "django_site.notes"
    label = "notes"
