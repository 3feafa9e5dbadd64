"""Slow clients, with Debian's slowhttptest: slowloris (a head sent a few bytes at a time), a slow body, a slow
reader. ponte closes the attackers' connections at their timeouts, and a normal client served at the same time
keeps at least 80% of the rate it had before the attack (a ratio measured in the test, on the plain build; the
server runs on CPU 0, the clients on CPU 1). Loopback only; each attack is 100 connections for a bounded time.

slowhttptest polls without sleeping (about half a CPU in slow-read mode), so it runs under SCHED_IDLE: the normal
client, woken by each response, then takes CPU 1 back at once, whatever the scheduler. nice 19 only lowers its
weight, and under Linux's EEVDF (6.6 on) a waking task need not preempt the running one before its slice ends.
That is one way the client, not the server, could be measured; the one failure seen (slow read, 1,172 against
2,027 req/s, on a slower VM) was not reproduced here, where nice 19 and SCHED_IDLE both left the client's rate
where it was without the attacker."""

import os
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
import unittest

from harness import SANITIZED, Conn, Server, run_tests

ATTACKS = {
    # name: (slowhttptest arguments, URL path, what ponte logs as it closes them)
    "slowloris": (["-H", "-i", "1", "-x", "10"], "/echo", "no complete request head within --header-timeout"),
    "slow body": (["-B", "-i", "1", "-s", "100000", "-x", "10"], "/upload", "slower than --min-body-rate"),
    "slow read": (["-X", "-k", "2", "-n", "3", "-w", "1", "-y", "4", "-z", "4"], "/big?size=2000000",
                  "progress for --client-timeout"),
}


def normal_client_rate(port, seconds):
    """The rate one keep-alive client gets for `seconds`: requests per second at its median request time (a median,
    because this VM stalls now and then for reasons of its own, and a mean would count those)."""
    c = Conn(socket.create_connection(("127.0.0.1", port), timeout=5))
    times = []
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        assert c.request("GET", "/echo").status == 200
        times.append(time.perf_counter() - t)
    c.close()
    return 1.0 / statistics.median(times)


class SlowClients:
    args = ("--header-timeout", "2", "--client-timeout", "2", "--no-access-log")

    @classmethod
    def setUpClass(cls):
        if shutil.which("slowhttptest") is None:
            raise AssertionError("slowhttptest is missing: apt-get install slowhttptest (.ci/deps does)")
        os.sched_setaffinity(0, {1} if os.cpu_count() > 1 else {0})     # this process and slowhttptest: CPU 1
        cls.server = Server(cls.app, *cls.args, threads=cls.threads)
        cls.server.args = ["taskset", "-c", "0"] + cls.server.args
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)

    def attack(self, name):
        argv, path, closes = ATTACKS[name]
        port = self.server.port
        before = normal_client_rate(port, 2)
        log_start = len(self.server.stderr())
        attacker = subprocess.Popen(["chrt", "--idle", "0", "slowhttptest", "-c", "100", "-r", "100", "-l", "8", "-p", "3",
                                     "-u", "http://127.0.0.1:%d%s" % (port, path)] + argv,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # All 100 connections are open by now, their requests in and answered as far as the server can (a slow
        # reader's 2 MB response is built and queued); what is measured next is the attack holding them.
        time.sleep(2.5)
        during = normal_client_rate(port, 2)
        out, _ = attacker.communicate(timeout=30)
        log = self.server.stderr()[log_start:]
        if not SANITIZED:
            # Under ASan the server's own work is several times slower: the ratio would measure the sanitizer.
            self.assertGreaterEqual(during, 0.8 * before, "%s: %.0f req/s during the attack, %.0f before" % (
                name, during, before))
        self.assertTrue(re.search(closes, log), "%s: ponte did not close the attackers:\n%s\n%s" % (
            name, log[-1500:], out[-1500:]))
        # slowhttptest does not always notice a close it does not read (slow read): ponte's log is the witness.
        self.assertGreaterEqual(len(re.findall(closes, log)), 50, "%s: ponte closed too few attackers" % name)
        self.assertEqual(Conn(self.server).request("GET", "/echo").status, 200)

    def test_slowloris(self):
        self.attack("slowloris")

    def test_slow_body(self):
        self.attack("slow body")

    def test_slow_read(self):
        self.attack("slow read")


class SlowClientsWorkers(SlowClients, unittest.TestCase):
    app = "testapp:application"
    threads = 8


class SlowClientsASGI(SlowClients, unittest.TestCase):
    app = "asgi_testapp:app"
    threads = None


if __name__ == "__main__":
    run_tests()
