"""RFC 9112 / RFC 9110 request handling that other servers get wrong or that llhttp 8.1 does not do by itself:
chunk extensions with optional whitespace, any token as a method, HTTP-name "HTTP" only, an absolute-form target's
authority over Host, transfer codings other than chunked, chunk sizes past every limit. Each case runs against
WSGI worker threads, WSGI on the loop thread and ASGI. docs/architecture.md has the table of policies."""

import json
import unittest

from harness import Conn, ServerCase, run_tests


def statuses(data):
    return [int(line[9:12]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.")]


class Conformance(ServerCase):
    args = ("--max-body-size", "1000000")
    # Methods the validator has not heard of are the client's, and every one of them is a method (RFC 9110 9.1).
    allowed_warnings = ("Unknown REQUEST_METHOD",)

    def echo(self, raw):
        """Sends raw bytes on a fresh connection; returns (status, the app's view or None)."""
        c = Conn(self.server)
        self.addCleanup(c.close)
        c.send(raw)
        r = c.read_response()
        return r.status, (json.loads(r.body) if r.status == 200 else None)

    def seen(self, doc):
        """(method, body, host header, SERVER_NAME or None) as the app saw them."""
        if "environ" in doc:
            env = doc["environ"]
            return env["REQUEST_METHOD"], doc["body"], env.get("HTTP_HOST"), env.get("SERVER_NAME")
        hosts = [v for k, v in doc["headers"] if k == "host"]
        return doc["method"], doc["body"], hosts[0] if len(hosts) == 1 else hosts, None

    def chunked(self, body):
        return b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body

    def test_chunk_extensions_with_whitespace(self):
        # chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): read the body, ignore the extensions.
        for ext in (b" ;a=b", b"; a=b", b" ; a = b", b";a", b";a=\"q \\\" ;x\"", b"\t;\ta\t=\tb;c=d",
                    b";a=b ;c"):
            with self.subTest(ext=ext):
                status, doc = self.echo(self.chunked(b"5" + ext + b"\r\nhello\r\n0" + ext + b"\r\n\r\n"))
                self.assertEqual(status, 200)
                self.assertEqual(self.seen(doc)[1], "hello")

    def test_malformed_chunk_lines(self):
        for line in (b"5 \r\n", b"5 x\r\n", b"5;\r\n", b"5;a=\r\n", b"5;a b\r\n", b"5;a=\"x\r\n", b"-5\r\n",
                     b"0x5\r\n", b"\r\n", b"5\n", b"5\rX", b"5;a=\"\x01\"\r\n"):
            with self.subTest(line=line):
                status, _ = self.echo(self.chunked(line + b"hello\r\n0\r\n\r\n"))
                self.assertEqual(status, 400)

    def test_chunk_data_must_match_its_size(self):
        for body in (b"5\r\nhelloX\r\n0\r\n\r\n", b"5\r\nhell\r\n0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n"):
            with self.subTest(body=body):
                status, _ = self.echo(self.chunked(body))
                self.assertEqual(status, 400)

    def test_chunk_size_past_the_limit(self):
        for size in (b"f4241", b"ffffffffffffffff", b"1" + b"0" * 40):
            with self.subTest(size=size):
                status, _ = self.echo(self.chunked(size + b"\r\nhello\r\n0\r\n\r\n"))
                self.assertEqual(status, 413)

    def test_trailers_checked_and_dropped(self):
        status, doc = self.echo(self.chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\nY-T: two words\r\n\r\n"))
        self.assertEqual((status, self.seen(doc)[1]), (200, "hello"))
        for trailer in (b" folded\r\n", b"X T: 1\r\n", b"X-T : 1\r\n", b"X-T: a\x00b\r\n", b"X-T: 1\n"):
            with self.subTest(trailer=trailer):
                status, _ = self.echo(self.chunked(b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n"))
                self.assertEqual(status, 400)

    def test_any_token_is_a_method(self):
        for method in ("QUERY", "FOO", "-BLARGH", "get", "M-SEARCH2", "A!#$%&'*+.^_`|~"):
            with self.subTest(method=method):
                status, doc = self.echo(b"%s /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi" %
                                        method.encode())
                self.assertEqual(status, 200)
                self.assertEqual(self.seen(doc)[:2], (method, "hi"))

    def test_not_a_method(self):
        for line in (b"GE(T / HTTP/1.1", b"G\x01T / HTTP/1.1", b" GET / HTTP/1.1", b"%s / HTTP/1.1" % (b"M" * 33)):
            with self.subTest(line=line):
                status, _ = self.echo(line + b"\r\nHost: t\r\n\r\n")
                self.assertEqual(status, 400)

    def test_only_http_is_http(self):
        # HTTP-name is "HTTP", case-sensitive (RFC 9112 2.3): other protocols' request lines are not served as 1.0.
        for line in (b"SOURCE /m ICE/1.0", b"ANNOUNCE /m RTSP/1.0", b"GET /m RTSP/1.0", b"GET / http/1.1",
                     b"GET / HTTPS/1.1"):
            with self.subTest(line=line):
                status, _ = self.echo(line + b"\r\nHost: t\r\n\r\n")
                self.assertEqual(status, 400)

    def test_absolute_form_authority_over_host(self):
        # RFC 9112 3.2.2: the target's authority, not Host, names the host.
        status, doc = self.echo(b"GET http://good.example:8080/p?q=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        self.assertEqual(status, 200)
        method, _, host, server_name = self.seen(doc)
        self.assertEqual(host, "good.example:8080")
        if server_name is not None:
            self.assertEqual((server_name, doc["environ"]["SERVER_PORT"]), ("good.example", "8080"))
            self.assertEqual((doc["environ"]["PATH_INFO"], doc["environ"]["QUERY_STRING"]), ("/p", "q=1"))
        status, doc = self.echo(b"GET http://user@good.example/p HTTP/1.0\r\n\r\n")
        self.assertEqual((status, self.seen(doc)[2]), (200, "good.example"))

    def test_transfer_codings(self):
        # RFC 9112 6.1: chunked once and last, or 400; a coding ponte cannot decode is 501, never passed on raw.
        cases = {b"deflate, chunked": 501, b"gzip, chunked": 501, b"identity, chunked": 501,
                 b"chunked, gzip": 400, b"chunked, chunked": 400, b"chunked;x=1": 400, b"": 400, b",": 400,
                 b"CHUNKED": 200, b", chunked": 200}
        for te, want in cases.items():
            with self.subTest(te=te):
                status, _ = self.echo(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + te +
                                      b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                self.assertEqual(status, want)

    def test_huge_content_length(self):
        status, _ = self.echo(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\nhello")
        self.assertEqual(status, 413)

    def test_pipelined_chunked_requests(self):
        # Each chunked body ends exactly where the next request starts, however the bytes are split.
        raw = b"".join(self.chunked(b"%x; n=%d\r\n%s\r\n0\r\n\r\n" % (len(b"body%d" % i), i, b"body%d" % i))
                       for i in range(5))
        for step in (len(raw), 1, 7):
            with self.subTest(step=step):
                c = Conn(self.server)
                self.addCleanup(c.close)
                for k in range(0, len(raw), step):
                    c.send(raw[k:k + step])
                for i in range(5):
                    r = c.read_response()
                    self.assertEqual(self.seen(json.loads(r.body))[1], "body%d" % i)


class ConformanceWorkers(Conformance, unittest.TestCase):
    threads = 4


class ConformanceLoopThread(Conformance, unittest.TestCase):
    threads = 0


class ConformanceASGI(Conformance, unittest.TestCase):
    app = "asgi_testapp:app"
    threads = None


if __name__ == "__main__":
    run_tests()
