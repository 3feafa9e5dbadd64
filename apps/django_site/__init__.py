"""A small Django 3.2 project served by ponte: notes in SQLite, a form with CSRF, a JSON view."""
