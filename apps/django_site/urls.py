from django.urls import path

from django_site.notes import views

urlpatterns = [
    path("", views.index, name="index"),
    path("notes/<int:note_id>/", views.detail, name="detail"),
    path("api/notes/", views.api_notes, name="api_notes"),
    path("stream/", views.stream, name="stream"),
]
