"""ponte against Debian's gunicorn 20.1, the same echo app behind both: the request corpora, seeded mutations of
them and the smuggling shapes. A request both accept but read differently (method, target, headers, body), or
that one accepts and the other refuses, fails the test unless it falls under a difference listed, with its
reason and RFC clause, in docs/http-conformance.md ("Differences from gunicorn 20.1"). Each listed difference has
a recogniser here, keyed by the id in the document's table; a recogniser without a row fails too."""

import glob
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import unittest

from harness import APPS, Server, free_port, run_tests, wait_for
from test_hostile import mutate
from test_smuggling import SHAPES

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")
DOC = os.path.join(HERE, "..", "..", "docs", "http-conformance.md")
MUTATIONS = int(os.environ.get("PONTE_DIFF_MUTATIONS", "400"))
GUNICORN = "/usr/bin/python3"


def exchange(port, raw, timeout=3):
    """Sends raw, half-closes, reads until the server closes. Returns (bytes, local port)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    local = s.getsockname()[1]
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return data, local


def reads(data):
    """What the app saw, request by request (the echo app's JSON bodies)."""
    return [json.loads(m) for m in re.findall(rb"(\{\"method\".*?\})(?=HTTP/1|$)", data, re.S)]


def error_text(data):
    """The body of the first response that is not the app's (gunicorn puts its reason there)."""
    for m in re.finditer(rb"HTTP/1\.[01] ([45]\d\d) [^\r]*\r\n(.*?)\r\n\r\n", data, re.S):
        rest = data[m.end():]
        return m.group(1).decode() + " " + rest[:300].decode("latin-1", "replace")
    return ""


# ---- recognisers: each takes (case, ponte's view, gunicorn's view) and says whether the difference is this one ----

def ponte_refused(*reasons):
    def rule(case, raw, p, g):
        return len(p["reads"]) < len(g["reads"]) and any(r in p["reason"] for r in reasons)
    return rule


def gunicorn_refused(*texts):
    def rule(case, raw, p, g):
        return len(g["reads"]) < len(p["reads"]) and any(t in g["error"] for t in texts)
    return rule


def read_differs(same_otherwise):
    """Both served the same number of requests; every pair of reads is equal or differs only as this rule says."""
    def rule(case, raw, p, g):
        if len(p["reads"]) != len(g["reads"]) or p["reads"] == g["reads"]:
            return False
        return all(a == b or same_otherwise(a, b, raw) for a, b in zip(p["reads"], g["reads"]))
    return rule


def headers_only(fn):
    def same(a, b, raw):
        keys = set(a["headers"]) | set(b["headers"])
        return ({k: v for k, v in a.items() if k != "headers"} == {k: v for k, v in b.items() if k != "headers"}
                and all(a["headers"].get(k) == b["headers"].get(k)
                        or fn(k, a["headers"].get(k), b["headers"].get(k), raw) for k in keys))
    return same


def field_only(field, fn):
    def same(a, b, raw):
        return ({k: v for k, v in a.items() if k != field} == {k: v for k, v in b.items() if k != field}
                and fn(a[field], b[field]))
    return same


def underscore_name(key, raw):
    """Whether the request had a header whose name has an underscore and that maps to this environ key."""
    for line in raw.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0]
        if b"_" in name and "HTTP_" + name.decode("latin-1").upper().replace("-", "_") in (key, "HTTP_" + key):
            return True
    return False


RECOGNISERS = {
    # ponte refuses what gunicorn 20.1 serves: its log says why.
    "host-required": ponte_refused("HTTP/1.1 request without Host"),
    "one-host": ponte_refused("more than one Host header"),
    "one-content-type": ponte_refused("more than one Content-Type"),
    "transfer-coding": ponte_refused("a transfer coding other than chunked", "does not end in chunked",
                                     "chunked applied more than once", "an empty Transfer-Encoding",
                                     "parameters on the chunked transfer coding", "Transfer-Encoding in an HTTP/1.0",
                                     "both Content-Length and Transfer-Encoding", "Transfer-Encoding"),
    "bare-cr-lf": ponte_refused("bare CR", "bare LF"),
    "obs-fold": ponte_refused("obs-fold"),
    "http-name": ponte_refused("not an HTTP request line", "Expected HTTP/"),
    "http-version": ponte_refused("only HTTP/1.x is served", "Expected dot", "Invalid minor version",
                                  "Invalid major version", "Invalid HTTP version"),
    "incomplete-body": ponte_refused("before the body was complete", "before sending the whole request body"),
    "header-name-token": ponte_refused("invalid character in a header field name", "Invalid header token",
                                       "Invalid header field char"),
    "connect": ponte_refused("CONNECT is not served"),
    "asterisk-options": ponte_refused("request-target '*' is only for OPTIONS"),
    "expect": ponte_refused("Expect other than 100-continue"),
    "chunked-strict": ponte_refused("chunk", "trailer"),
    "method-token": ponte_refused("invalid request method", "request method longer"),
    "llhttp-strict": ponte_refused("Invalid header value char", "Invalid URL",
                                   "Invalid char in url", "Invalid character in Content-Length",
                                   "Duplicate Content-Length", "Content-Length can't be present",
                                   "Missing expected CR", "Missing expected LF",
                                   "Data after `Connection: close`", "Invalid characters in url",
                                   "Request has invalid `Transfer-Encoding`", "Invalid method",
                                   "Expected space after", "Expected CRLF", "Unexpected whitespace",
                                   "Unexpected space", "Unexpected char", "Empty Content-Length",
                                   "Header overflow", "Content-Length overflow", "Missing expected"),
    "head-limits": ponte_refused("request head larger than --max-header-size", "too many empty lines"),
    # gunicorn 20.1 refuses what ponte serves: its 400 says why.
    "gunicorn-line-limits": gunicorn_refused("Request Line is too large", "Request Header Fields Too Large",
                                             "limit request headers fields", "Error parsing headers: 'limit"),
    "any-token-method": gunicorn_refused("Invalid HTTP method", "Invalid Method"),
    "gunicorn-strictness": gunicorn_refused("Invalid HTTP Version", "Invalid header", "Invalid request line",
                                            "Invalid HTTP request line", "Invalid Header"),
    # Both serve it, and read it differently.
    "underscore-headers": read_differs(headers_only(lambda k, a, b, raw: a is None and underscore_name(k, raw))),
    "trailing-whitespace": read_differs(headers_only(lambda k, a, b, raw: a is not None and b is not None
                                                     and a == b.rstrip(" \t"))),
    "list-join": read_differs(headers_only(lambda k, a, b, raw: a is not None and b is not None
                                           and a.replace(", ", ",") == b.replace(", ", ","))),
    "asterisk-path": read_differs(field_only("path", lambda a, b: a == "" and b == "*")),
    "latin1-path": read_differs(field_only("path", lambda a, b: b == a.encode("utf-8").decode("latin-1"))),
    "method-case": read_differs(field_only("method", lambda a, b: a != b and b == a.upper())),
}


def documented_ids():
    """The ids of the table under "## Differences from gunicorn 20.1" in docs/http-conformance.md."""
    with open(DOC) as f:
        text = f.read()
    section = text.split("## Differences from gunicorn 20.1", 1)
    if len(section) < 2:
        return set()
    section = section[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))


def cases():
    out = []
    for path in sorted(glob.glob(os.path.join(CORPUS, "gunicorn-raw", "*", "*.raw"))
                       + glob.glob(os.path.join(CORPUS, "llhttp-raw", "request", "*.raw"))):
        with open(path, "rb") as f:
            out.append((os.path.relpath(path, CORPUS)[:-4], f.read()))
    if not out:
        raise AssertionError("the request corpus is missing from " + CORPUS)
    rng = random.Random(20261201)
    seeds = [raw for _, raw in out if len(raw) < 4000]
    for i in range(MUTATIONS):
        out.append(("mutation-%d" % i, mutate(rng, rng.choice(seeds))))
    out += [("smuggling: " + name, raw) for name, raw in SHAPES.items()]
    return out


class Differential(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        probe = subprocess.run([GUNICORN, "-c", "import gunicorn"], capture_output=True)
        if probe.returncode != 0:
            raise AssertionError("Debian's gunicorn is missing: apt-get install python3-gunicorn (.ci/deps does)")
        cls.gport = free_port()
        cls.gunicorn = subprocess.Popen(
            [GUNICORN, "-m", "gunicorn", "-w", "1", "-k", "sync", "--timeout", "5", "-b", "127.0.0.1:%d" % cls.gport,
             "--chdir", APPS, "--log-level", "critical", "corpus_echo:echo"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.ponte = Server("corpus_echo:echo", threads=4).start()

        def up():
            try:
                socket.create_connection(("127.0.0.1", cls.gport), timeout=1).close()
                return True
            except OSError:
                return False
        if not wait_for(up, 15):
            raise AssertionError("gunicorn did not start")

    @classmethod
    def tearDownClass(cls):
        cls.gunicorn.terminate()
        cls.gunicorn.wait(10)
        cls.ponte.__exit__(None, None, None)

    def reason(self, port, since):
        """ponte's log line for the connection from `port`, among the lines logged after offset `since` (ports are
        reused: an older line may name another connection). It is written before the answer goes out, but
        through another pipe: waited for, a little."""
        found = []

        def look():
            found[:] = [l for l in self.ponte.stderr()[since:].splitlines() if ("127.0.0.1:%d " % port) in l]
            return found
        wait_for(look, 2)
        return found[0] if found else ""

    def test_recognisers_are_documented(self):
        self.assertEqual(sorted(set(RECOGNISERS) - documented_ids()), [],
                         "differences recognised here without a row in docs/http-conformance.md")

    def test_same_reading_or_a_documented_difference(self):
        unexplained, counts = [], {}
        for name, raw in cases():
            since = len(self.ponte.stderr())
            pdata, pport = exchange(self.ponte.port, raw)
            gdata, _ = exchange(self.gport, raw)
            p = {"reads": reads(pdata), "reason": ""}
            g = {"reads": reads(gdata), "error": error_text(gdata)}
            if p["reads"] == g["reads"]:
                counts["same"] = counts.get("same", 0) + 1
                continue
            if len(p["reads"]) < len(g["reads"]):
                p["reason"] = self.reason(pport, since)
            ids = [i for i, rule in RECOGNISERS.items() if rule(name, raw, p, g)]
            if ids:
                counts[ids[0]] = counts.get(ids[0], 0) + 1
                continue
            unexplained.append("%s:\n  ponte:    %s %s\n  gunicorn: %s %s" % (
                name, json.dumps(p["reads"])[:400], p["reason"][-160:], json.dumps(g["reads"])[:400],
                g["error"][:160]))
        sys.stderr.write("differential: %s\n" % json.dumps(counts, sort_keys=True))
        self.assertFalse(unexplained, "%d difference(s) not in docs/http-conformance.md:\n%s" % (
            len(unexplained), "\n".join(unexplained[:20])))
        self.assertGreater(counts.get("same", 0), 100, counts)


if __name__ == "__main__":
    run_tests()
