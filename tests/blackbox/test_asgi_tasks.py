"""The Task an ASGI app runs in: ponte takes its first step at once (gateway/asgi_task.c, as Python 3.12's eager
task factory), or schedules it as asyncio does (PONTE_ASGI_EAGER=off, and the fallback when the start-up check
fails). In both, current_task(), cancel(), asyncio.timeout(), wait_for(), anyio's cancel scopes and task groups, and
context variables behave as asyncio defines them (apps/asyncio_semantics.py)."""

import json
import unittest

from harness import ServerCase, run_tests


class TaskSemantics:
    app = "asyncio_semantics:app"
    args = ("--lifespan", "off")

    def get(self, path):
        r = self.conn().request("GET", path)
        self.assertEqual(r.status, 200, r.body)
        return json.loads(r.body)

    def test_current_task_is_the_request_task(self):
        self.assertEqual(self.get("/current"), {"is_task": True, "done": False, "in_all_tasks": True,
                                                "coro": "ASGIAppRun", "name": "ponte-request-",
                                                "same_after_a_wait": True})

    def test_asyncio_timeout_cancels_and_uncancels(self):
        r = self.get("/timeout")
        self.assertTrue(r["timed_out"])
        self.assertLess(r["seconds"], 2.5)
        self.assertEqual(r["cancelling"], 0)

    def test_wait_for_times_out(self):
        self.assertEqual(self.get("/wait_for"), {"timed_out": True})

    def test_a_task_cancelling_itself_in_its_first_step(self):
        self.assertEqual(self.get("/cancel_self"), {"cancelled": True})

    def test_anyio_cancel_scopes_and_task_groups(self):
        self.assertEqual(self.get("/anyio"), {"moved_on": True, "failed_after": True, "children": [0, 1, 2],
                                              "cancelled_scope": True})

    def test_call_soon_threadsafe_wakes_the_loop(self):
        # ponte's loop sends call_soon_threadsafe's wake-up byte keeping the GIL (gateway/asgi_loop.c): it must
        # still wake the loop at once, from a plain thread and from the executor.
        r = self.get("/threadsafe")
        self.assertEqual((r["woken"], r["executor"], r["wake"]), ("woken", True, "builtin_function_or_method"), r)
        self.assertLess(r["seconds"], 1.0)

    def test_call_soon_threadsafe_bursts_from_many_threads_all_arrive(self):
        # One wake-up byte per poll (gateway/asgi_loop.c): 20 times 400 futures resolved from 8 threads each.
        for _ in range(20):
            self.assertEqual(self.get("/threadsafe_burst"), {"resolved": 400})

    def test_context_variables_stay_in_their_request(self):
        # A variable set in a first step (which ponte may take inside its own loop turn) must not leak into the
        # loop or the next request, whether the request waited once or not at all.
        self.assertEqual(self.get("/set_var?a"), {"var": "a"})
        self.assertEqual(self.get("/set_var_no_wait?b"), {"var": "b"})
        self.assertEqual(self.get("/get_var"), {"var": "unset"})

    def test_the_start_up_log_says_how_tasks_start(self):
        self.assertIn(self.started_log, self.server.stderr())


class EagerFirstStep(TaskSemantics, ServerCase, unittest.TestCase):
    started_log = "takes its first step at once (eager"


class ScheduledFirstStep(TaskSemantics, ServerCase, unittest.TestCase):
    started_log = "tasks start on the loop's next turn (PONTE_ASGI_EAGER=off)"

    @classmethod
    def extra_env(cls):
        return {"PONTE_ASGI_EAGER": "off"}


if __name__ == "__main__":
    run_tests()
