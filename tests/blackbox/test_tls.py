"""TLS (--ssl-certfile and the rest, server/tls.c): Python's ssl module, curl and openssl s_client against ponte.

Certificates are made at the start with the openssl command: a CA, a server certificate it signs (localhost and
127.0.0.1), a client certificate it signs, one signed by another CA, and the server's key encrypted with a password.
Checked: TLS 1.2 and 1.3, ALPN, what WSGI and ASGI apps see (wsgi.url_scheme, HTTPS, scheme, the ASGI TLS
extension), keep-alive, large bodies both ways, WebSocket over TLS, client certificates required, optional and
absent, a bad certificate, key or password refused at start-up, a handshake that stalls, plain HTTP sent to a TLS
port, many stalled handshakes at once, sockets with and without TLS side by side, --processes and --loops."""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import APPS, Conn, Master, Server, assert_rss_below, rss_of, run_tests, wait_for
from wsclient import WS, TEXT

sys.path.insert(0, APPS)
from tls_app import big  # noqa: E402 - the app's own bytes, to compare with

DIR = tempfile.mkdtemp(prefix="ponte-tls-")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=DIR)


def make_certificates():
    ext = os.path.join(DIR, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                ca + "-key.pem", "-out", ca + ".pem", "-days", "2", "-subj", "/CN=ponte test " + ca)
    for name, ca, cn in (("server", "ca", "localhost"), ("server2", "ca", "localhost"), ("client", "ca", "a client"),
                         ("stranger", "other-ca", "a stranger")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", name + "-key.pem",
                "-out", name + ".csr", "-subj", "/CN=" + cn)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + "-key.pem", "-CAcreateserial",
                "-out", name + ".pem", "-days", "2", "-extfile", ext)
    openssl("pkey", "-in", "server-key.pem", "-aes256", "-passout", "pass:s3cret", "-out", "server-key-pw.pem")


def path(name):
    return os.path.join(DIR, name)


def client_context(version=None, cert=None, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=path("ca.pem"))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(path(cert + ".pem"), path(cert + "-key.pem"))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TLSServer(Server):
    """A Server whose connect() speaks TLS (for Conn and WS)."""

    def __init__(self, app, *args, context=None, **kw):
        super().__init__(app, "--ssl-certfile", path("server.pem"), "--ssl-keyfile", path("server-key.pem"), *args,
                         **kw)
        self.context = context or client_context()

    def connect(self, timeout=10):
        return self.context.wrap_socket(super().connect(timeout), server_hostname="localhost")

    def raw(self, timeout=10):
        return super().connect(timeout)


def serial(pem_path):
    out = subprocess.run(["openssl", "x509", "-in", pem_path, "-noout", "-serial"], capture_output=True, text=True,
                         check=True).stdout
    return out.strip().split("=", 1)[1].upper()


def listening(server):
    return re.findall(r"listening on (\S+)", server.stderr())


class TLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        make_certificates()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(DIR, ignore_errors=True)

    def get_json(self, s, target="/", context=None):
        conn = Conn((context.wrap_socket(s.raw(), server_hostname="localhost")) if context else s.connect())
        r = conn.request("GET", target)
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body), conn

    def test_wsgi_over_tls_1_2_and_1_3(self):
        with TLSServer("tls_app:application", threads=2) as s:
            self.assertEqual(listening(s), ["https://127.0.0.1:%d" % s.port])
            for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
                sock = client_context(version).wrap_socket(s.raw(), server_hostname="localhost")
                self.assertEqual((sock.version(), sock.selected_alpn_protocol()), (name, "http/1.1"))
                c = Conn(sock)
                self.assertEqual(json.loads(c.request("GET", "/").body), {"scheme": "https", "https": "on"})
                # keep-alive, and 2 MiB each way on the same connection
                self.assertEqual(c.request("GET", "/big?2097152").body, big(2097152))
                body = os.urandom(2 << 20)
                r = c.request("POST", "/upload", body=body)
                self.assertEqual(r.body.decode(), "%d %s" % (len(body), hashlib.sha256(body).hexdigest()))
                c.close()

    def test_asgi_sees_the_tls_extension(self):
        with TLSServer("tls_app:app", context=client_context(cert="client"), env={}) as s:
            seen, _ = self.get_json(s)
        self.assertEqual(seen["scheme"], "https")
        tls = seen["tls"]
        self.assertEqual(tls["tls_version"], 0x0304)
        self.assertIsInstance(tls["cipher_suite"], int)
        with open(path("server.pem")) as f:
            self.assertEqual(tls["server_cert"], f.read())
        self.assertEqual((tls["client_cert_chain"], tls["client_cert_name"]), ([], None))  # not asked for

    def test_client_certificates(self):
        args = ("--ssl-ca-certs", path("ca.pem"), "--ssl-cert-reqs")
        with TLSServer("tls_app:app", *args, "required") as s:
            seen, _ = self.get_json(s, context=client_context(cert="client"))
            tls = seen["tls"]
            self.assertEqual((tls["client_cert_name"], tls["client_cert_error"]), ("CN=a client", None))
            with open(path("client.pem")) as f:  # the client's own first; then what it sent of its chain
                self.assertEqual(tls["client_cert_chain"][0], f.read())
            self.assertTrue(all(p.startswith("-----BEGIN CERTIFICATE-----\n") for p in tls["client_cert_chain"]))
            for cert in (None, "stranger"):
                with self.assertRaises((ssl.SSLError, ConnectionError)):
                    sock = client_context(cert=cert).wrap_socket(s.raw(), server_hostname="localhost")
                    Conn(sock).request("GET", "/")  # TLS 1.3: the server's refusal comes with the first read
            self.assertEqual(self.get_json(s, context=client_context(cert="client"))[0]["scheme"], "https")
        with TLSServer("tls_app:app", *args, "optional") as s:
            self.assertIsNone(self.get_json(s)[0]["tls"]["client_cert_name"])
            self.assertEqual(self.get_json(s, context=client_context(cert="client"))[0]["tls"]["client_cert_name"],
                             "CN=a client")

    def test_websocket_over_tls(self):
        with TLSServer("tls_app:app") as s:
            ws = WS(s, "/ws")
            self.assertEqual(ws.status, 101)
            first = json.loads(ws.recv_message().payload)
            self.assertEqual((first["scheme"], first["tls"]["tls_version"]), ("wss", 0x0304))
            for text in ("hello", "x" * 100000):
                ws.text(text)
                f = ws.recv_message()
                self.assertEqual((f.opcode, f.payload), (TEXT, text.upper().encode()))
            ws.close()

    def test_curl_and_openssl_s_client(self):
        with TLSServer("tls_app:application", threads=2) as s:
            url = "https://localhost:%d/" % s.port
            for version, said in (("--http1.1", "1.1"), ("--http2", "2")):  # ALPN: http/1.1, or h2 (test_h2.py)
                out = subprocess.run(["curl", "-s", version, "--cacert", path("ca.pem"), "--resolve",
                                      "localhost:%d:127.0.0.1" % s.port, "-w", " %{http_version}", url],
                                     capture_output=True, text=True, timeout=30).stdout
                self.assertEqual(out, '{"scheme": "https", "https": "on"} ' + said)
            probe = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % s.port, "-alpn", "h2,http/1.1",
                                    "-CAfile", path("ca.pem"), "-brief"], input="", capture_output=True, text=True,
                                   timeout=30)
            self.assertIn("Protocol version: TLSv1.3", probe.stderr)
            self.assertIn("Verification: OK", probe.stderr)
            probe = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % s.port, "-alpn", "spdy/3",
                                    "-CAfile", path("ca.pem"), "-brief"], input="", capture_output=True, text=True,
                                   timeout=30)
            self.assertIn("no application protocol", probe.stderr)  # RFC 7301 3.2

    def test_refused_at_start_up(self):
        def refused(*args):
            s = Server("tls_app:application", *args)
            with self.assertRaises(RuntimeError) as e:
                s.start()
            return str(e.exception)

        cert, key = path("server.pem"), path("server-key-pw.pem")
        self.assertIn("cannot serve TLS: cannot load the key (is the password right?) " + key,
                      refused("--ssl-certfile", cert, "--ssl-keyfile", key, "--ssl-keyfile-password", "wrong"))
        self.assertIn("cannot serve TLS: cannot load the key", refused("--ssl-certfile", cert, "--ssl-keyfile", key))
        self.assertIn("cannot serve TLS: the key does not match the certificate",
                      refused("--ssl-certfile", cert, "--ssl-keyfile", path("client-key.pem")))
        self.assertIn("cannot serve TLS: cannot load the certificate " + path("nope.pem"),
                      refused("--ssl-certfile", path("nope.pem")))
        self.assertIn("needs --ssl-ca-certs", refused("--ssl-certfile", cert, "--ssl-keyfile", path("server-key.pem"),
                                                      "--ssl-cert-reqs", "required"))
        self.assertIn("--bind https://127.0.0.1:0 needs --ssl-certfile", refused("--bind", "https://127.0.0.1:0"))
        self.assertIn("cannot serve TLS", refused("--processes", "1", "--ssl-certfile", cert, "--ssl-keyfile", key))
        with TLSServer("tls_app:application", "--ssl-keyfile-password", "s3cret", "--ssl-keyfile", key) as s:
            self.assertEqual(self.get_json(s)[0]["scheme"], "https")  # the encrypted key with its password

    def test_stalled_and_bogus_handshakes(self):
        with TLSServer("tls_app:application", "--header-timeout", "1", threads=2) as s:
            stalled = [s.raw() for _ in range(100)]  # connected, saying nothing
            half = s.raw()
            hello = bytearray()
            probe = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = client_context().wrap_bio(*probe, server_hostname="localhost")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                hello = probe[1].read()
            half.sendall(hello[: len(hello) // 2])  # half a ClientHello
            plain = s.raw()
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(self.get_json(s)[0]["scheme"], "https")  # others are served meanwhile
            self.assertIn(plain.recv(100)[:1], (b"", b"\x15"))  # an alert, or nothing: never a response
            started = time.time()
            half.settimeout(5)
            self.assertEqual(half.recv(100), b"")  # closed at the header timeout
            self.assertLess(time.time() - started, 4)
            for sock in stalled + [half, plain]:
                sock.close()
            self.assertEqual(self.get_json(s)[0]["scheme"], "https")

    def test_tls_and_plain_side_by_side(self):
        with TLSServer("tls_app:application", "--bind", "http://127.0.0.1:0", bind="https://127.0.0.1:0",
                       threads=2) as s:
            urls = listening(s)
            self.assertEqual([u.split(":")[0] for u in urls], ["https", "http"])
            plain_port = int(urls[1].rsplit(":", 1)[1])
            c = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)
            c.request("GET", "/")
            self.assertEqual(json.loads(c.getresponse().read()), {"scheme": "http", "https": None})
            self.assertEqual(self.get_json(s)[0], {"scheme": "https", "https": "on"})

    def test_under_processes_and_loops(self):
        """Two workers of two loops each serve TLS from the master's sockets."""
        with Master("tls_app:app", "--ssl-certfile", path("server.pem"), "--ssl-keyfile", path("server-key.pem"),
                    "--loops", "2", processes=2) as s:
            self.assertEqual(listening(s)[0], "https://127.0.0.1:%d" % s.port)
            ctx = client_context()
            for _ in range(8):
                conn = Conn(ctx.wrap_socket(Server.connect(s), server_hostname="localhost"))
                self.assertEqual(json.loads(conn.request("GET", "/").body)["scheme"], "https")
                conn.close()

    def test_sighup_reloads_the_certificate_under_load(self):
        """New connections get the new certificate, an open one goes on with the old, and no request fails; a
        certificate that no longer loads leaves the one in use."""
        live_cert, live_key = path("live.pem"), path("live-key.pem")
        shutil.copy(path("server.pem"), live_cert)
        shutil.copy(path("server-key.pem"), live_key)
        with Server("tls_app:application", "--ssl-certfile", live_cert, "--ssl-keyfile", live_key, threads=2) as s:
            ctx = client_context()

            def connect():
                return ctx.wrap_socket(Server.connect(s), server_hostname="localhost")
            kept = connect()
            self.assertEqual(kept.getpeercert()["serialNumber"], serial(path("server.pem")))
            kept_conn = Conn(kept)
            self.assertEqual(kept_conn.request("GET", "/").status, 200)
            stop, failures, done = threading.Event(), [], [0]

            def load():
                while not stop.is_set():
                    try:
                        c = Conn(connect())
                        if c.request("GET", "/").status != 200:
                            failures.append("status")
                        c.close()
                        done[0] += 1
                    except Exception as e:  # noqa: BLE001 - every failure counts
                        failures.append(repr(e))
            loaders = [threading.Thread(target=load) for _ in range(4)]
            for t in loaders:
                t.start()
            time.sleep(0.3)
            shutil.copy(path("server2.pem"), live_cert)
            shutil.copy(path("server2-key.pem"), live_key)
            s.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: "TLS certificate reloaded" in s.stderr(), 10), s.stderr())
            time.sleep(0.3)
            stop.set()
            for t in loaders:
                t.join(30)
            self.assertEqual(failures, [])
            self.assertGreater(done[0], 10)
            self.assertEqual(connect().getpeercert()["serialNumber"], serial(path("server2.pem")))
            self.assertEqual(kept_conn.request("GET", "/").status, 200)  # the old connection, its old session
            with open(live_cert, "w") as f:
                f.write("not a certificate")
            s.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: "the TLS certificate in use stays" in s.stderr(), 10), s.stderr())
            self.assertEqual(connect().getpeercert()["serialNumber"], serial(path("server2.pem")))

    def test_sessions_resume_from_tickets(self):
        with TLSServer("tls_app:application", threads=2) as s:
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                ctx = client_context(version)
                first = ctx.wrap_socket(s.raw(), server_hostname="localhost")
                Conn(first).request("GET", "/")  # TLS 1.3's ticket comes after the handshake
                session = first.session
                first.close()
                again = ctx.wrap_socket(s.raw(), server_hostname="localhost", session=session)
                self.assertEqual(Conn(again).request("GET", "/").status, 200)
                self.assertTrue(again.session_reused, version)
                again.close()

    def test_idle_connections_are_small(self):
        """400 connections that shook hands and were answered, then went idle: at most 40 KiB each (OpenSSL frees
        its record buffers while a connection waits; measured here: 16 KiB, the plain connection included)."""
        with TLSServer("tls_app:application", threads=2) as s:
            warm = [Conn(s.connect()) for _ in range(20)]
            for c in warm:
                c.request("GET", "/")
            time.sleep(0.3)
            before = rss_of(s.proc.pid)
            conns = [Conn(s.connect()) for _ in range(400)]
            for c in conns:
                self.assertEqual(c.request("GET", "/").status, 200)
            time.sleep(0.3)
            per = (rss_of(s.proc.pid) - before) / len(conns)
            print("# %.1f KiB per idle TLS connection" % (per / 1024), flush=True)
            assert_rss_below(self, per, 40 * 1024, "RSS per idle TLS connection")
            for c in conns + warm:
                c.close()

    def test_many_connections_at_once(self):
        """Handshakes and requests from 32 clients at once, twice each, on a pool of two threads."""
        with TLSServer("tls_app:application", threads=2) as s:
            errors = []

            def client():
                try:
                    for _ in range(2):
                        conn = s.connect()
                        c = Conn(conn)
                        if json.loads(c.request("GET", "/").body)["scheme"] != "https":
                            errors.append("scheme")
                        c.close()
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(repr(e))
            threads = [threading.Thread(target=client) for _ in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(errors, [])
            self.assertNotIn("error", s.stderr())


if __name__ == "__main__":
    run_tests()
