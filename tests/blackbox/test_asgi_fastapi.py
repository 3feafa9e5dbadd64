"""FastAPI from Debian (python3-fastapi) on ponte: its startup event, path and query parameters, a validated JSON
body, a streaming response and a sync view (run in its thread pool)."""

import json
import unittest

from harness import REPO_APPS, ServerCase, run_tests

ASGI_APPS = REPO_APPS + "/asgi"


class FastAPIApp(ServerCase, unittest.TestCase):
    app = "fastapi_app:app"
    app_dir = ASGI_APPS

    def test_startup_event_ran(self):
        self.assertEqual(json.loads(self.conn().request("GET", "/").body), {"ready": True, "server": "ponte"})

    def test_path_and_query(self):
        c = self.conn()
        self.assertEqual(json.loads(c.request("GET", "/items/7?q=hi").body), {"item_id": 7, "q": "hi"})
        self.assertEqual(c.request("GET", "/items/seven").status, 422)

    def test_validated_body(self):
        c = self.conn()
        r = c.request("POST", "/notes", [("Content-Type", "application/json")], b'{"text": "hi", "stars": 3}')
        self.assertEqual(json.loads(r.body), {"text": "HI", "stars": 3})
        r = c.request("POST", "/notes", [("Content-Type", "application/json")], b'{"stars": "many"}')
        self.assertEqual(r.status, 422)

    def test_streaming_and_sync_view(self):
        c = self.conn()
        self.assertEqual(c.request("GET", "/stream?n=3").body, b"line 0\nline 1\nline 2\n")
        self.assertEqual(json.loads(c.request("GET", "/sync").body), {"sync": True})


if __name__ == "__main__":
    run_tests()
