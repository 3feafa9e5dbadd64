"""--processes N: a master that binds, starts N workers and supervises them. Every worker answers; a killed worker is
replaced; SIGHUP reloads fresh code with no failed request under load; --max-requests recycles; --timeout replaces
a worker stuck in a request (worker thread or blocked loop) and logs where it was stuck; a worker that cannot boot
stops the master; SIGTERM is graceful across workers; unix sockets, --fd and --reuse-port work."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (APPS, PONTE, Conn, Master, Server, free_port, get, ready_count, run_tests, wait_for,
                     workers_of)


def start(app, *args, **kw):
    return Master(app, *args, **kw)


def pid_over_new_connection(server, path="/pid"):
    c = Conn(server)
    try:
        r = c.request("GET", path)
        assert r.status == 200, r.status
        return int(r.body)
    finally:
        c.close()


class Hammer:
    """Client threads sending keep-alive requests back to back, as wrk does; counts what went wrong."""

    def __init__(self, server, clients=8, path="/pid", parse=int):
        self.server, self.path, self.parse = server, path, parse
        self.stop, self.ok, self.errors, self.pids = threading.Event(), 0, [], set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self):
        c = None
        while not self.stop.is_set():
            try:
                if c is None:
                    c = Conn(self.server)
                r = c.request("GET", self.path)
                with self.lock:
                    if r.status != 200:
                        self.errors.append("status %d" % r.status)
                    else:
                        self.ok += 1
                        self.pids.add(self.parse(r.body))
                if (r.header("connection") or "").lower() == "close":
                    c.close()
                    c = None
            except Exception as e:          # a reset, EOF or timeout is exactly what must not happen
                with self.lock:
                    self.errors.append(repr(e))
                c = None
        if c is not None:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


class Processes(unittest.TestCase):
    def test_each_worker_answers(self):
        # --threads 0: a worker busy with a slow request cannot accept, so concurrent ones reach the other worker.
        with start("testapp:application", threads=0) as s:
            pids = set()

            def slow():
                c = Conn(s)
                c.request("GET", "/slow?delay=0.4")
                c.close()

            blockers = [threading.Thread(target=slow) for _ in range(2)]
            for t in blockers:
                t.start()
            time.sleep(0.1)
            for t in blockers:
                t.join()
            deadline = time.time() + 10
            while len(pids) < 2 and time.time() < deadline:
                hold = [threading.Thread(target=slow) for _ in range(2)]
                for t in hold:
                    t.start()
                time.sleep(0.1)
                pids.add(pid_over_new_connection(s))
                for t in hold:
                    t.join()
                pids.add(pid_over_new_connection(s))
            workers = workers_of(s.proc.pid)
            self.assertEqual(len(workers), 2, s.stderr())
            self.assertEqual(pids, set(workers))
            self.assertNotIn(s.proc.pid, pids)      # the master never runs the app

    def test_killed_worker_is_replaced(self):
        with start("testapp:application") as s:
            before = workers_of(s.proc.pid)
            os.kill(before[0], signal.SIGKILL)
            self.assertTrue(wait_for(lambda: len(workers_of(s.proc.pid)) == 2 and ready_count(s) >= 3, 15),
                            s.stderr())
            after = workers_of(s.proc.pid)
            self.assertNotIn(before[0], after)
            self.assertIn("was killed by signal 9", s.stderr())
            for _ in range(10):
                self.assertIn(pid_over_new_connection(s), after)

    def test_sighup_reloads_fresh_code_and_loses_nothing(self):
        app_dir = tempfile.mkdtemp(prefix="ponte-reload-")
        module = os.path.join(app_dir, "versioned.py")

        def write(version):
            with open(module, "w") as f:
                f.write("import os\n"
                        "def app(environ, start_response):\n"
                        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                        "    return [b'%d ' + str(os.getpid()).encode()]\n" % version)
            os.utime(module, (time.time() + version, time.time() + version))     # a new mtime for the .pyc check

        write(1)
        with start("versioned:app", "--no-access-log", app_dir=app_dir) as s:
            old = workers_of(s.proc.pid)
            self.assertEqual(Conn(s).request("GET", "/").body.split()[0], b"1")
            hammer = Hammer(s, clients=8, path="/", parse=bytes)      # the body is "VERSION PID"
            with hammer:
                time.sleep(0.5)
                write(2)
                s.signal(signal.SIGHUP)
                self.assertTrue(wait_for(lambda: ready_count(s) >= 4, 30), s.stderr())
                time.sleep(0.5)
                s.signal(signal.SIGHUP)
                self.assertTrue(wait_for(lambda: ready_count(s) >= 6, 30), s.stderr())
                time.sleep(1.5)
            self.assertEqual(hammer.errors, [], s.stderr()[-3000:])
            self.assertGreater(hammer.ok, 100)
            self.assertTrue(wait_for(lambda: len(workers_of(s.proc.pid)) == 2, 15))
            new = workers_of(s.proc.pid)
            self.assertFalse(set(old) & set(new), (old, new))
            for _ in range(5):
                version, pid = Conn(s).request("GET", "/").body.split()
                self.assertEqual(version, b"2")
                self.assertIn(int(pid), new)

    def test_reload_on_file_change(self):
        """--reload (development): saving a .py file under --app-dir, even in a package below it, reloads."""
        app_dir = tempfile.mkdtemp(prefix="ponte-dev-")
        os.mkdir(os.path.join(app_dir, "pkg"))
        open(os.path.join(app_dir, "pkg", "__init__.py"), "w").close()

        def write(text):
            with open(os.path.join(app_dir, "pkg", "answer.py"), "w") as f:
                f.write("TEXT = %r\n" % text)

        write("first")
        with open(os.path.join(app_dir, "devapp.py"), "w") as f:
            f.write("from pkg import answer\n"
                    "def app(environ, start_response):\n"
                    "    start_response('200 OK', [])\n"
                    "    return [answer.TEXT.encode()]\n")
        s = Server("devapp:app", "--reload", app_dir=app_dir)
        with s:
            self.assertTrue(wait_for(lambda: ready_count(s) >= 1, 30))
            self.assertIn("--reload: watching 2 directories", s.stderr())
            self.assertEqual(Conn(s).request("GET", "/").body, b"first")
            write("second")
            self.assertTrue(wait_for(lambda: ready_count(s) >= 2, 30), s.stderr())
            self.assertIn("answer.py changed: reloading", s.stderr())
            self.assertTrue(wait_for(lambda: Conn(s).request("GET", "/").body == b"second", 10))

    def test_reload_of_broken_code_keeps_the_old_workers(self):
        app_dir = tempfile.mkdtemp(prefix="ponte-reload-")
        module = os.path.join(app_dir, "breakable.py")
        with open(module, "w") as f:
            f.write("def app(environ, start_response):\n"
                    "    start_response('200 OK', [])\n"
                    "    return [b'fine']\n")
        with start("breakable:app", app_dir=app_dir) as s:
            old = workers_of(s.proc.pid)
            with open(module, "w") as f:
                f.write("raise RuntimeError('broken on purpose')\n")
            os.utime(module, (time.time() + 5, time.time() + 5))
            s.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: s.stderr().count("reload of worker") >= 2, 30), s.stderr())
            self.assertEqual(workers_of(s.proc.pid), old)
            self.assertEqual(Conn(s).request("GET", "/").body, b"fine")
            # The failed workers left the shared listening socket blocking (their exec did), and the worker that
            # accepted above then waited in accept() for ever, deaf to SIGTERM until the master killed it 35 s later.
            s.signal(signal.SIGTERM)
            self.assertEqual(s.proc.wait(10), 0, s.stderr()[-2000:])

    def test_max_requests_recycles(self):
        with start("testapp:application", "--max-requests", "20", processes=1) as s:
            hammer = Hammer(s, clients=2)
            with hammer:
                wait_for(lambda: len(hammer.pids) >= 3, 30)
            self.assertEqual(hammer.errors, [], s.stderr()[-3000:])
            self.assertGreaterEqual(len(hammer.pids), 3, hammer.pids)
            self.assertIn("--max-requests: ", s.stderr())

    def test_timeout_replaces_a_worker_stuck_in_a_thread(self):
        with start("testapp:application", "--timeout", "1", "--graceful-timeout", "2", processes=1,
                   threads=2) as s:
            first = workers_of(s.proc.pid)[0]
            stuck = Conn(s)
            stuck.send(b"GET /slow?delay=8 HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertTrue(wait_for(lambda: ready_count(s) >= 2, 20), s.stderr())
            log = s.stderr()
            self.assertRegex(log, r'"GET /slow\?delay=8" has been in the app for [\d.]+s with no bytes moving '
                                  r'\(--timeout 1s\)')
            self.assertIn("testapp.py", log)            # faulthandler's stack of the stuck thread
            self.assertIn("in slow", log)
            # The successor is ready: the stuck worker is stopped, and its stuck request abandoned after
            # --graceful-timeout.
            self.assertTrue(wait_for(lambda: first not in workers_of(s.proc.pid), 20), s.stderr())
            self.assertNotEqual(pid_over_new_connection(s), first)
            stuck.close()

    def test_timeout_spares_a_slow_stream(self):
        """A response streaming a chunk every 0.4 s for 3 s outlives --timeout 1 without being called stuck."""
        with start("testapp:application", "--timeout", "1", processes=1, threads=2) as s:
            first = workers_of(s.proc.pid)[0]
            c = Conn(s)
            r = c.request("GET", "/stream?n=8&size=10&delay=0.4")
            c.close()
            self.assertEqual(r.status, 200)
            self.assertEqual(len(r.body), 80)
            self.assertNotIn("no bytes moving", s.stderr())
            self.assertEqual(workers_of(s.proc.pid), [first])

    def test_timeout_replaces_a_worker_whose_loop_is_blocked(self):
        # --threads 0: the request runs on the loop thread, which stops beating; the master notices.
        with start("testapp:application", "--timeout", "1", processes=1, threads=0) as s:
            first = workers_of(s.proc.pid)[0]
            stuck = Conn(s)
            stuck.send(b"GET /slow?delay=20 HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertTrue(wait_for(lambda: ready_count(s) >= 2, 30), s.stderr())
            log = s.stderr()
            self.assertIn("has not answered for", log)
            self.assertIn("in slow", log)
            self.assertIn("was killed by signal 9", log)
            self.assertNotEqual(first, workers_of(s.proc.pid)[0])
            stuck.close()

    def test_a_worker_that_outlives_the_graceful_timeout_shows_where_it_is(self):
        """A worker whose loop is blocked cannot stop when asked: past --graceful-timeout (and 5 s more), the master
        asks it for its Python stacks, then kills it."""
        s = start("testapp:application", "--graceful-timeout", "1", processes=1, threads=0).start()
        try:
            stuck = Conn(s)
            stuck.send(b"GET /slow?delay=20 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.3)
            s.signal(signal.SIGTERM)
            self.assertEqual(s.proc.wait(15), 0, s.stderr())
            log = s.stderr()
            self.assertIn("did not stop within --graceful-timeout: its Python stacks follow, then it is killed", log)
            self.assertIn("in slow", log)  # faulthandler's stack of the loop thread, stuck in the app
            self.assertIn("was killed by signal 9", log)
            stuck.close()
        finally:
            s.__exit__(None, None, None)

    def test_a_worker_that_cannot_boot_stops_the_master(self):
        r = subprocess.run([PONTE, "--app-dir", APPS, "-b", "127.0.0.1:0", "--processes", "2",
                            "raises_on_import:app"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("failed to boot", r.stderr)
        self.assertIn("this module fails to import", r.stderr)

    def test_sigterm_is_graceful_across_workers(self):
        s = start("testapp:application").start()
        workers = workers_of(s.proc.pid)
        c = Conn(s)
        c.send(b"GET /slow?delay=0.8 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"slept 0.8"))
        self.assertEqual(s.wait(30), 0, s.stderr())
        for pid in workers:
            self.assertFalse(os.path.exists("/proc/%d" % pid) and open("/proc/%d/stat" % pid).read().split()[2] != "Z")
        self.assertIn("master stopped", s.stderr())
        s.__exit__(None, None, None)

    def test_master_killed_takes_the_workers_with_it(self):
        s = start("testapp:application").start()
        workers = workers_of(s.proc.pid)
        s.proc.kill()
        s.proc.wait()
        self.assertTrue(wait_for(lambda: not any(os.path.exists("/proc/%d" % p) for p in workers), 15))

    def test_unix_socket(self):
        path = tempfile.mktemp(prefix="ponte-", suffix=".sock")
        s = Server("testapp:application", "--processes", "2", "--unix-mode", "660", bind="unix:" + path)
        with s:
            self.assertTrue(wait_for(lambda: ready_count(s) >= 2, 30))
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o660)
            self.assertEqual(Conn(s).request("GET", "/status?code=204").status, 204)
        self.assertFalse(os.path.exists(path))

    def test_inherited_fd(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        for extra in ([], ["--processes", "2"]):
            proc = subprocess.Popen([PONTE, "--app-dir", APPS, "--fd", str(sock.fileno())] + extra +
                                    ["testapp:application"], pass_fds=[sock.fileno()],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                body = None
                deadline = time.time() + 20
                while body is None and time.time() < deadline:
                    try:
                        c = socket.create_connection(("127.0.0.1", port), timeout=5)
                        conn = Conn(c)
                        body = conn.request("GET", "/pid").body
                        conn.close()
                    except OSError:
                        time.sleep(0.1)
                self.assertIsNotNone(body)
                self.assertNotEqual(int(body), 0)
            finally:
                proc.terminate()
                _, err = proc.communicate(timeout=30)
            self.assertEqual(proc.returncode, 0, err)
        sock.close()

    def test_reuse_port_spreads_connections(self):
        with start("testapp:application", "--reuse-port") as s:
            self.assertIn("SO_REUSEPORT", s.stderr())
            pids = {pid_over_new_connection(s) for _ in range(40)}
            self.assertEqual(pids, set(workers_of(s.proc.pid)))

    def test_gil_monitor_shows_every_worker(self):
        """--gil-monitor under --processes: the master serves the page and /workers (Prometheus http_sd JSON) listing
        each worker's own monitor; each of those reports its own GIL."""
        port = free_port()
        with start("testapp:application", "--gil-monitor", "127.0.0.1:%d" % port) as s:
            self.assertIn("GIL monitor (every worker's GIL) on http://127.0.0.1:%d" % port, s.stderr())

            def listed():
                return [g for g in json.loads(get(port, "/workers").body) if g["labels"]["state"] == "ready"]

            self.assertTrue(wait_for(lambda: len(listed()) == 2, 10), get(port, "/workers").body)
            groups = listed()
            pids = workers_of(s.proc.pid)
            self.assertEqual(sorted(int(g["labels"]["pid"]) for g in groups), pids)
            self.assertEqual(sorted(g["labels"]["worker"] for g in groups), ["1", "2"])
            for g in groups:
                host, wport = g["targets"][0].rsplit(":", 1)
                self.assertEqual(host, "127.0.0.1")
                self.assertTrue(wait_for(lambda: "pid" in json.loads(get(int(wport), "/snapshot").body), 5))
                snap = json.loads(get(int(wport), "/snapshot").body)
                self.assertEqual(str(snap["pid"]), g["labels"]["pid"])
                # each worker's own /metrics (the series there, with a GIL and without one on 3.14t)
                self.assertIn("ponte_python_running_threads", get(int(wport), "/metrics").body.decode())
            page = get(port, "/")
            self.assertEqual(page.status, 200)
            self.assertIn(b"fetch(\"workers\")", page.body)
            self.assertEqual(get(port, "/snapshot").status, 404)      # the master has no GIL of its own

    def test_each_worker_writes_its_own_trace_and_profile(self):
        """--gil-trace and --gil-profile under --processes: FILE.N per worker, each whole, each the worker's own."""
        tmp = tempfile.mkdtemp(prefix="ponte-proc-trace-")
        self.addCleanup(shutil.rmtree, tmp, True)
        trace, profile = os.path.join(tmp, "gil.json"), os.path.join(tmp, "gil.folded")
        with start("testapp:application", "--gil-trace", trace, "--gil-profile", profile) as s:
            pids = set()
            deadline = time.time() + 10
            while len(pids) < 2 and time.time() < deadline:
                pids.add(pid_over_new_connection(s))
                c = Conn(s)
                self.assertEqual(c.request("GET", "/spin?seconds=0.05").status, 200)
                c.close()
            self.assertEqual(pids, set(workers_of(s.proc.pid)))
        self.assertEqual(sorted(os.listdir(tmp)), ["gil.folded.1", "gil.folded.2", "gil.json.1", "gil.json.2"])
        seen = set()
        for n in (1, 2):
            with open("%s.%d" % (trace, n)) as f:
                events = json.load(f)  # whole JSON: the workers did not write over each other
            seen |= {e["pid"] for e in events}
            self.assertEqual(len({e["pid"] for e in events}), 1, events[:3])
        self.assertEqual(seen, pids)

    def test_options_that_need_processes(self):
        for opt in (["--max-requests", "5"], ["--timeout", "3"], ["--reuse-port"]):
            r = subprocess.run([PONTE, "-b", "127.0.0.1:0"] + opt + ["hello:app"], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 2, opt)
            self.assertIn("need --processes", r.stderr)


if __name__ == "__main__":
    run_tests()
