"""httpx (Debian's python3-httpx, with python3-h2) over TLS against real frameworks: ALPN picks h2, and Django
(WSGI and ASGI) and FastAPI serve it as they serve HTTP/1.1. On Debian 12's CPython, as test_asgi_fastapi.py:
FastAPI's pydantic-core is built for the distribution's default CPython only."""

import os
import re
import ssl
import tempfile
import unittest

import httpx
from harness import REPO_APPS, Server, run_tests
from test_h2 import CERT, KEY, make_certificate


def setUpModule():
    make_certificate()


class Frameworks(unittest.TestCase):
    """httpx (Debian's python3-httpx, with h2) over TLS: ALPN picks h2, and Django (WSGI and ASGI) and FastAPI
    serve it as they serve HTTP/1.1: pages, a form POST with its CSRF cookie, JSON, a streamed response."""

    def serve(self, app, app_dir, **kw):
        s = Server(app, "--ssl-certfile", CERT, "--ssl-keyfile", KEY, app_dir=app_dir, env=kw.pop("env", None),
                   **kw).start()
        self.addCleanup(s.__exit__, None, None, None)
        client = httpx.Client(http2=True, verify=ssl.create_default_context(cafile=CERT),
                              base_url="https://127.0.0.1:%d" % s.port, timeout=10)
        self.addCleanup(client.close)
        return client

    def django(self, app, **kw):
        db = tempfile.NamedTemporaryFile(prefix="ponte-django-", suffix=".sqlite3", delete=False).name
        self.addCleanup(os.unlink, db)
        c = self.serve(app, REPO_APPS, env={"PONTE_DJANGO_DB": db}, **kw)
        r = c.get("/")
        self.assertEqual((r.status_code, r.http_version), (200, "HTTP/2"))
        self.assertIn(b"<h1>Notes</h1>", r.content)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', r.content).group(1).decode()
        # over https Django's CSRF check wants a Referer from the same origin
        r = c.post("/", data={"csrfmiddlewaretoken": token, "text": "over h2"}, follow_redirects=True,
                   headers={"Referer": str(c.base_url)})
        self.assertEqual((r.status_code, r.http_version), (200, "HTTP/2"))
        self.assertIn(b"over h2", r.content)
        self.assertIn("over h2", [n["text"] for n in c.get("/api/notes/").json()["notes"]])
        self.assertEqual(c.get("/stream/?n=3").content, b"line 0\nline 1\nline 2\n")

    def test_django_wsgi(self):
        self.django("django_site.wsgi:application", threads=4)

    def test_django_asgi(self):
        self.django("django_site.asgi:application")

    def test_fastapi(self):
        c = self.serve("fastapi_app:app", REPO_APPS + "/asgi")
        r = c.get("/items/7?q=hi")
        self.assertEqual((r.http_version, r.json()), ("HTTP/2", {"item_id": 7, "q": "hi"}))
        self.assertEqual(c.post("/notes", json={"text": "hi", "stars": 3}).json(), {"text": "HI", "stars": 3})
        self.assertEqual(c.get("/stream?n=3").content, b"line 0\nline 1\nline 2\n")



if __name__ == "__main__":
    run_tests()
