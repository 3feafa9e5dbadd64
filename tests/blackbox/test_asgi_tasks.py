"""The Task an ASGI app runs in: ponte takes its first step at once (gateway/asgi_task.c, as Python 3.12's eager
task factory), or schedules it as asyncio does (PONTE_ASGI_EAGER=off, and the fallback when the start-up check
fails). In both, current_task(), cancel(), asyncio.timeout(), wait_for(), anyio's cancel scopes and task groups, and
context variables behave as asyncio defines them (apps/asyncio_semantics.py)."""

import json
import unittest

from harness import BUILT_FOR_INFO, ServerCase, run_tests


class TaskSemantics:
    app = "asyncio_semantics:app"
    args = ("--lifespan", "off")
    reader_impl = "builtin_function_or_method"  # the self-pipe's reader: ponte's (gateway/asgi_loop.c)

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
        self.assertEqual((r["woken"], r["executor"], r["wake"], r["reader"]),
                         ("woken", True, "builtin_function_or_method", self.reader_impl), r)
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
        self.assertIn(self.loop_log, self.server.stderr())

    def test_call_soon_gives_asyncio_handles(self):
        r = self.get("/handles")
        self.assertEqual(r.pop("impl"), self.loop_impl)
        # from 3.14 call_soon_threadsafe's handle is an events._ThreadSafeHandle, in asyncio as in ponte's C
        types = ["Handle", "_ThreadSafeHandle"] if BUILT_FOR_INFO >= (3, 14) else ["Handle"]
        self.assertEqual(r, {"ran": [1, ["a", "b"], "in-handle-context", 5], "types": types, "is_handle": True,
                             "context": True, "cancelled": [False, True], "repr": True})

    def test_timers_fire_in_order_and_cancelled_ones_leave_the_heap(self):
        r = self.get("/timers")
        self.assertEqual(r["fired"], [1, 2, 3])
        self.assertLessEqual(r["left_after_rebuild"], 100)  # 300 were scheduled, 200 of them cancelled
        self.assertTrue(r["cancelled_count"])

    def test_a_callback_that_raises_goes_to_the_exception_handler(self):
        self.assertEqual(self.get("/callback_error"), {"message": True, "exception": "ValueError('from a callback')",
                                                       "handle": True, "traceback": True, "then": ["after"]})
        self.assertEqual(self.get("/current")["is_task"], True)

    def test_a_signal_handler_still_runs(self):
        # The self-pipe's reader is ponte's (it skips call_soon_threadsafe's zero bytes): a signal number must
        # still reach asyncio's add_signal_handler.
        self.assertEqual(self.get("/signal"), {"signal": "handled"})
        self.assertEqual(self.get("/threadsafe")["woken"], "woken")

    def test_asyncios_task_set_adds_and_removes(self):
        r = self.get("/all_tasks")
        size = r.pop("size")
        if BUILT_FOR_INFO >= (3, 14):  # asyncio's own C list: nothing of ponte's to check but what all_tasks() says
            self.assertEqual(r, {"listed": [True, True], "finished_listed": False})
        else:
            self.assertEqual(r, {"listed": [True, True], "added": 1, "pending_while_iterated": 1, "pending_after": 0,
                                 "left": 0, "add": self.task_set_add})
        for _ in range(50):
            self.get("/current")
        self.assertEqual(self.get("/all_tasks")["size"], size)  # 50 finished request tasks left no entry behind

    def test_debug_mode_runs_asyncios_own_loop(self):
        self.assertEqual(self.get("/debug"), {"ran": ["debug", "threadsafe"], "source_traceback": True,
                                              "get_debug": [False, True, False]})
        self.assertEqual(self.get("/handles")["impl"], self.loop_impl)


class EagerFirstStep(TaskSemantics, ServerCase, unittest.TestCase):
    started_log = "takes its first step at once (eager"
    loop_log = "asyncio's loop turns and schedules in C"
    loop_impl = ["builtin_function_or_method", "builtin_function_or_method", "builtin_function_or_method"]
    task_set_add = "builtin_function_or_method"


class ScheduledFirstStep(TaskSemantics, ServerCase, unittest.TestCase):
    started_log = "tasks start on the loop's next turn (PONTE_ASGI_EAGER=off)"
    loop_log = "asyncio's loop turns and schedules in C"
    loop_impl = ["builtin_function_or_method", "builtin_function_or_method", "builtin_function_or_method"]
    task_set_add = "builtin_function_or_method"

    @classmethod
    def extra_env(cls):
        return {"PONTE_ASGI_EAGER": "off"}


class AsyncioOwnLoop(TaskSemantics, ServerCase, unittest.TestCase):
    """The same, with asyncio's _run_once and call_soon in Python (PONTE_ASGI_LOOP=python)."""
    started_log = "takes its first step at once (eager"
    loop_log = "asyncio's loop turns and schedules in Python (PONTE_ASGI_LOOP=python)"
    loop_impl = ["method", "method", "method"]
    task_set_add = "NoneType"

    @classmethod
    def extra_env(cls):
        return {"PONTE_ASGI_LOOP": "python"}



class OwnLoopMethods(TaskSemantics, ServerCase, unittest.TestCase):
    """Each start-up check of a C replacement failing on its own (apps/own_loop_methods.py changes asyncio as an
    app could): asyncio's code runs instead, the log says why, and nothing above behaves differently."""
    app = "own_loop_methods:app"
    started_log = "takes its first step at once (eager"
    loop_log = ("asyncio's loop turns and schedules in Python, not in C: the loop's class has a call_soon, "
                "call_soon_threadsafe, _run_once or get_debug of its own")
    loop_impl = ["method", "method", "method"]
    task_set_add = "method"
    reader_impl = "method"

    def test_the_log_says_which_replacement_stood_down(self):
        log = self.server.stderr()
        self.assertIn("ASGI: the loop reads its wake-ups as asyncio does", log)
        if BUILT_FOR_INFO < (3, 14):
            self.assertIn("ASGI: asyncio's task set (all_tasks) adds in Python, not in C: it has an add of its own "
                          "already", log)


if __name__ == "__main__":
    run_tests()
