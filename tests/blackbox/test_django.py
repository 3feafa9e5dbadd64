"""A real Django project (Debian's python3-django: 3.2 on Debian 12, 5.2 in sid) served end to end: pages, a form POST with a CSRF cookie
round trip, the JSON view, 404s; through WSGI (worker threads and the loop thread), through ASGI, and mounted
under /django by the demo (SCRIPT_NAME)."""

import json
import os
import re
import tempfile
import unittest
from urllib.parse import urlencode

from harness import REPO_APPS, ServerCase, run_tests


class DjangoBase(ServerCase):
    app = "django_site.wsgi:application"
    app_dir = REPO_APPS
    prefix = ""

    @classmethod
    def extra_env(cls):
        cls.db = tempfile.NamedTemporaryFile(prefix="ponte-django-", suffix=".sqlite3", delete=False).name
        return {"PONTE_DJANGO_DB": cls.db}

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            os.unlink(cls.db)

    def get(self, c, path, headers=()):
        return c.request("GET", self.prefix + path, list(headers))

    def csrf(self, c):
        r = self.get(c, "/")
        self.assertEqual(r.status, 200)
        cookie = [v for k, v in r.headers if k == "set-cookie" and v.startswith("csrftoken=")]
        self.assertTrue(cookie, r.headers)
        token = cookie[0].split(";")[0].split("=", 1)[1]
        form_token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', r.body).group(1).decode()
        return token, form_token

    def test_index_page(self):
        r = self.get(self.conn(), "/")
        self.assertEqual(r.status, 200)
        self.assertIn(b"<h1>Notes</h1>", r.body)
        self.assertRegex(r.body, rb"A Django \d+\.\d+\.\d+ app on ponte")
        self.assertIn("text/html", r.header("content-type"))

    def test_post_with_csrf_round_trip(self):
        c = self.conn()
        cookie, token = self.csrf(c)
        text = "note from ponte %d" % self.threads
        body = urlencode({"csrfmiddlewaretoken": token, "text": text}).encode()
        r = c.request("POST", self.prefix + "/", [("Cookie", "csrftoken=" + cookie),
                                                  ("Content-Type", "application/x-www-form-urlencoded")], body)
        self.assertEqual(r.status, 302, r.body[:500])
        self.assertEqual(r.header("location"), self.prefix + "/")
        r = self.get(c, "/", [("Cookie", "csrftoken=" + cookie)])
        self.assertIn(text.encode(), r.body)
        doc = json.loads(self.get(c, "/api/notes/").body)
        self.assertIn(text, [n["text"] for n in doc["notes"]])
        note_id = [n["id"] for n in doc["notes"] if n["text"] == text][0]
        r = self.get(c, "/notes/%d/" % note_id)
        self.assertEqual(r.status, 200)
        self.assertIn(text.encode(), r.body)

    def test_post_without_csrf_is_forbidden(self):
        r = self.conn().request("POST", self.prefix + "/", [("Content-Type", "application/x-www-form-urlencoded")],
                                b"text=sneaky")
        self.assertEqual(r.status, 403)

    def test_json_view(self):
        r = self.get(self.conn(), "/api/notes/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "application/json")
        doc = json.loads(r.body)
        self.assertIn("count", doc)
        self.assertIsInstance(doc["notes"], list)

    def test_streaming_response(self):
        r = self.get(self.conn(), "/stream/?n=4")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"line 0\nline 1\nline 2\nline 3\n")
        self.assertIsNone(r.header("content-length"))

    def test_404s(self):
        c = self.conn()
        self.assertEqual(self.get(c, "/notes/999999/").status, 404)
        self.assertEqual(self.get(c, "/no/such/page/").status, 404)
        # Still fine afterwards, on the same connection.
        self.assertEqual(self.get(c, "/api/notes/").status, 200)


class DjangoWorkers(DjangoBase, unittest.TestCase):
    threads = 4


class DjangoLoopThread(DjangoBase, unittest.TestCase):
    threads = 0


class DjangoASGI(DjangoBase, unittest.TestCase):
    """The same project through get_asgi_application(): sync views run in asgiref's thread executor."""
    app = "django_site.asgi:application"


class DjangoInDemo(DjangoBase, unittest.TestCase):
    """The README's demo mounts the same project under /django."""
    app = "demo:application"
    prefix = "/django"

    def test_demo_landing_links_everything(self):
        r = self.conn().request("GET", "/")
        for link in (b'href="/hello"', b'href="/io"', b'href="/cpu"', b'href="/django/"'):
            self.assertIn(link, r.body)
        c = self.conn()
        self.assertEqual(c.request("GET", "/hello").body, b"Hello, world!")
        self.assertEqual(c.request("GET", "/io?delay=0.01").body, b"waited 0.010 s\n")
        self.assertTrue(c.request("GET", "/cpu?n=1000").body.startswith(b"work(1000) = "))
        self.assertEqual(c.request("GET", "/io?delay=x").status, 400)


if __name__ == "__main__":
    run_tests()
