"""ASGI lifespan: startup runs before ponte listens and its state reaches every request scope (as a copy);
shutdown runs after the last request on SIGTERM; a failed startup stops ponte with a clear error; --lifespan
auto|on|off decides what happens with apps that do not speak lifespan."""

import os
import subprocess
import tempfile
import unittest

from harness import APPS, PONTE, Conn, Server, run_tests


class Lifespan(unittest.TestCase):
    def events_file(self):
        path = tempfile.NamedTemporaryFile(prefix="ponte-events-", delete=False).name
        self.addCleanup(os.unlink, path)
        return path

    def test_startup_state_and_shutdown(self):
        events = self.events_file()
        with Server("asgi_lifespan_apps:good", env={"PONTE_TEST_EVENTS": events}) as s:
            with open(events) as f:
                self.assertEqual(f.read(), "startup\n")     # before the server listened
            c = Conn(s)
            for _ in range(2):
                self.assertEqual(c.request("GET", "/").body, b"[('db', 'connected')]")
            c.close()
        with open(events) as f:
            self.assertEqual(f.read(), "startup\nshutdown\n")

    def test_failed_shutdown_is_logged(self):
        s = Server("asgi_lifespan_apps:shutdown_fails").start()
        self.assertEqual(Conn(s).request("GET", "/").status, 200)
        self.assertEqual(s.stop(), 0)
        self.assertIn("ASGI lifespan shutdown failed: could not flush the cache", s.stderr())
        s.__exit__(None, None, None)

    def test_failed_startup_exits_non_zero(self):
        r = subprocess.run([PONTE, "--app-dir", APPS, "-b", "127.0.0.1:0", "asgi_lifespan_apps:failing"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ASGI lifespan startup failed: database unreachable", r.stderr)
        self.assertIn("ponte: error:", r.stderr)
        self.assertNotIn("listening on", r.stderr)

    def test_auto_without_lifespan_support(self):
        with Server("asgi_lifespan_apps:no_lifespan") as s:
            self.assertEqual(Conn(s).request("GET", "/").body, b"[]")
            self.assertIn("lifespan not supported by the app", s.stderr())

    def test_on_requires_lifespan(self):
        r = subprocess.run([PONTE, "--app-dir", APPS, "-b", "127.0.0.1:0", "--lifespan", "on",
                            "asgi_lifespan_apps:no_lifespan"], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ASGI lifespan startup failed", r.stderr)

    def test_off_skips_lifespan(self):
        events = self.events_file()
        with Server("asgi_lifespan_apps:good", "--lifespan", "off", env={"PONTE_TEST_EVENTS": events}) as s:
            self.assertEqual(Conn(s).request("GET", "/").body, b"[]")
        with open(events) as f:
            self.assertEqual(f.read(), "")


if __name__ == "__main__":
    run_tests()
