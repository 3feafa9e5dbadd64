"""Behind a reverse proxy: X-Forwarded-For / X-Forwarded-Proto / Forwarded are believed only from the addresses in
--forwarded-allow-ips (WSGI REMOTE_ADDR and wsgi.url_scheme, ASGI client and scheme); and docs/deploy/nginx.conf,
run by Debian's nginx on loopback, spreads requests over two ponte instances (one TCP with two processes, one on a
unix socket) and hands each the real client address."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from harness import HERE, Conn, Server, free_port, run_tests, wait_for, workers_of

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROXY_HEADERS = [("X-Forwarded-For", "198.51.100.4, 203.0.113.7"), ("X-Forwarded-Proto", "https")]


def echo(server, path="/echo", headers=()):
    c = Conn(server)
    r = c.request("GET", path, headers=list(headers))
    c.close()
    assert r.status == 200, r.status
    return json.loads(r.body)


class Forwarded(unittest.TestCase):
    def test_wsgi_trusted_proxy(self):
        with Server("testapp:application", "--forwarded-allow-ips", "127.0.0.1,::1") as s:
            env = echo(s, headers=PROXY_HEADERS)["environ"]
            self.assertEqual(env["REMOTE_ADDR"], "203.0.113.7")     # the rightmost hop that is not a proxy
            self.assertEqual(env["wsgi.url_scheme"], "https")
            env = echo(s)["environ"]
            self.assertEqual((env["REMOTE_ADDR"], env["wsgi.url_scheme"]), ("127.0.0.1", "http"))
            self.assertTrue(wait_for(lambda: "203.0.113.7" in s.stdout(), 3), "the access log names the client")

    def test_wsgi_untrusted_peer(self):
        for args in ((), ("--forwarded-allow-ips", "10.0.0.0/8")):
            with Server("testapp:application", *args) as s:
                env = echo(s, headers=PROXY_HEADERS)["environ"]
                self.assertEqual((env["REMOTE_ADDR"], env["wsgi.url_scheme"]), ("127.0.0.1", "http"), args)

    def test_asgi_trusted_proxy(self):
        with Server("asgi_testapp:app", "--forwarded-allow-ips", "*",
                    env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            scope = echo(s, headers=[("Forwarded", 'for="[2001:db8::7]:1234";proto=https')])
            self.assertEqual(scope["client"][0], "2001:db8::7")
            self.assertEqual(scope["scheme"], "https")
            scope = echo(s)
            self.assertEqual((scope["client"][0], scope["scheme"]), ("127.0.0.1", "http"))

    def test_bad_list_is_refused(self):
        r = subprocess.run([os.environ.get("PONTE", os.path.join(REPO, "build", "ponte")), "--forwarded-allow-ips",
                            "localhost", "hello:app"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not an IP address", r.stderr)


@unittest.skipUnless(os.path.exists(NGINX) or os.environ.get("CI") == "true",
                     "needs Debian's nginx (installed by .ci/deps on CI)")
class BehindNginx(unittest.TestCase):
    def test_docs_nginx_conf(self):
        tmp = tempfile.mkdtemp(prefix="ponte-nginx-")
        os.chmod(tmp, 0o755)                # nginx's workers run as www-data
        self.addCleanup(shutil.rmtree, tmp, True)
        sock = os.path.join(tmp, "b.sock")
        a = Server("testapp:application", "--processes", "2", "--forwarded-allow-ips", "127.0.0.1").start()
        self.addCleanup(a.__exit__, None, None, None)
        b = Server("testapp:application", "--forwarded-allow-ips", "unix", "--unix-mode", "666",
                   bind="unix:" + sock).start()
        self.addCleanup(b.__exit__, None, None, None)
        port = free_port()
        with open(os.path.join(REPO, "docs", "deploy", "nginx.conf")) as f:
            site = f.read()
        site = (site.replace("127.0.0.1:8000;", "127.0.0.1:%d;" % a.port)
                    .replace("unix:/run/ponte/b.sock;", "unix:%s;" % sock)
                    .replace("listen 80;", "listen 127.0.0.2:%d;" % port))
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
                    "events { worker_connections 256; }\n"
                    "http {\n  access_log off;\n  client_body_temp_path %s;\n  proxy_temp_path %s;\n%s\n}\n"
                    % (tmp, tmp, tmp, tmp, site))
        nginx = subprocess.Popen([NGINX, "-p", tmp, "-c", conf, "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (nginx.poll() is None and nginx.send_signal(signal.SIGQUIT), nginx.wait(20)))

        def client():
            s = socket.socket()
            s.settimeout(10)
            s.bind(("127.0.0.3", 0))        # a "remote" client: nginx sees 127.0.0.3, ponte sees nginx
            s.connect(("127.0.0.2", port))
            return s

        def up():
            try:
                client().close()
                return True
            except OSError:
                return False

        self.assertTrue(wait_for(up, 15), nginx.stderr.read() if nginx.poll() is not None else "nginx not up")
        pids = set()
        for i in range(10):
            c = Conn(client())
            r = c.request("GET", "/echo?n=%d" % i)
            c.close()
            self.assertEqual(r.status, 200)
            env = json.loads(r.body)["environ"]
            self.assertEqual(env["REMOTE_ADDR"], "127.0.0.3")
            self.assertEqual(env["wsgi.url_scheme"], "http")
        for i in range(20):                 # not interleaved with the above: nginx alternates upstreams
            c = Conn(client())
            pids.add(int(c.request("GET", "/pid").body))
            c.close()
        # Both instances served (nginx round-robins between them).
        self.assertIn(b.proc.pid, pids)
        self.assertTrue(pids & set(workers_of(a.proc.pid)), (pids, workers_of(a.proc.pid)))
        # A POST body goes through intact.
        c = Conn(client())
        r = c.request("POST", "/echo", body=b"x" * 300000, headers=[("Content-Type", "application/octet-stream")])
        c.close()
        self.assertEqual(len(json.loads(r.body)["body"]), 300000)


if __name__ == "__main__":
    run_tests()
