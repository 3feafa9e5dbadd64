import django
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .forms import NoteForm
from .models import Note


def index(request):
    """The notes list, and a form to add one (POST, protected by CSRF)."""
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect("index")
    else:
        form = NoteForm()
    context = {"form": form, "notes": Note.objects.all()[:50], "django_version": django.get_version()}
    return render(request, "notes/index.html", context)


def detail(request, note_id):
    note = get_object_or_404(Note, pk=note_id)
    return render(request, "notes/detail.html", {"note": note})


def api_notes(request):
    notes = [{"id": n.id, "text": n.text, "created": n.created.isoformat()} for n in Note.objects.all()[:50]]
    return JsonResponse({"count": Note.objects.count(), "notes": notes})


def stream(request):
    """A streaming response: the lines leave as they are produced (WSGI iterable or ASGI more_body events)."""
    n = min(int(request.GET.get("n", "5")), 1000)
    return StreamingHttpResponse(("line %d\n" % i for i in range(n)), content_type="text/plain")
