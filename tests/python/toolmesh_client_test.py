#!/usr/bin/env python3
"""Unit tests of examples/python/toolmesh_client.py against an in-process
fake TaskService (grpcio server on 127.0.0.1, port 0).

They cover what a live cluster does not show on demand: resuming a broken
event stream with after_seq (UNAVAILABLE, RESOURCE_EXHAUSTED, an early end)
without printing an event twice, the exit status of each task outcome, the
authorization metadata, and errors that must not be retried.

Run with /usr/bin/python3 (Debian's python3-grpcio and python3-protobuf; a
pyenv `python3` on PATH may lack them). Each test is bounded: the resume
backoff is shortened and every RPC the fake serves returns at once.
"""

import concurrent.futures
import importlib.util
import io
import pathlib
import socket
import threading
import unittest

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CLIENT_PATH = ROOT / "examples" / "python" / "toolmesh_client.py"


def load_client_module():
    spec = importlib.util.spec_from_file_location("toolmesh_client",
                                                  CLIENT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = load_client_module()
gen = client.load_bindings(ROOT / "proto")
pb = gen.task_pb2
svc = gen.task_service_pb2


class FakeTaskService(gen.task_service_pb2_grpc.TaskServiceServicer):
    """Serves one task's scripted events.

    `events`: the task's events, seq 1..N. `breaks`: one entry per WatchTask
    call, in order: (count, code) sends `count` events after after_seq, then
    ends the call with `code` (None: ends it with OK). Calls beyond the list
    send everything. Records each WatchTask's after_seq and each call's
    authorization metadata.
    """

    def __init__(self, events, breaks=(), watch_error=None):
        self.events = events
        self.breaks = list(breaks)
        self.watch_error = watch_error
        self.after_seqs = []
        self.authorizations = []
        self.submitted = []
        self._lock = threading.Lock()

    def _record_auth(self, context):
        value = dict(context.invocation_metadata()).get("authorization", "")
        with self._lock:
            self.authorizations.append(value)

    def SubmitTask(self, request, context):
        self._record_auth(context)
        with self._lock:
            self.submitted.append(request.spec)
        return svc.SubmitTaskResponse(task_id="task_1", created=True)

    def WatchTask(self, request, context):
        self._record_auth(context)
        with self._lock:
            self.after_seqs.append(request.after_seq)
            plan = self.breaks.pop(0) if self.breaks else None
        if self.watch_error is not None:
            context.abort(self.watch_error, "scripted watch error")
        pending = [e for e in self.events if e.seq > request.after_seq]
        if plan is None:
            yield from pending
            return
        count, code = plan
        yield from pending[:count]
        if code is not None:
            context.abort(code, "scripted break")


def event(seq, **kwargs):
    return pb.TaskEvent(task_id="task_1", seq=seq, **kwargs)


def script(terminal_state):
    """A task that calls echo once and ends in `terminal_state`."""
    tool = dict(tool_use_id="toolu_1", name="echo",
                kind=pb.TOOL_KIND_CLIENT)
    return [
        event(1, state_changed=pb.TaskStateChanged(
            state=pb.TASK_STATE_RUNNING,
            previous_state=pb.TASK_STATE_QUEUED)),
        event(2, turn_started=pb.TurnStarted(turn=1, attempt=1)),
        event(3, text_delta=pb.TextDelta(turn=1, attempt=1, text="Hel")),
        event(4, text_delta=pb.TextDelta(turn=1, attempt=1, text="lo")),
        event(5, tool_transition=pb.ToolTransition(
            state=pb.TOOL_CALL_STATE_PENDING, input_json='{"message":"x"}',
            **tool)),
        event(6, tool_transition=pb.ToolTransition(
            state=pb.TOOL_CALL_STATE_RUNNING, worker_id="w1", attempt=1,
            **tool)),
        event(7, tool_transition=pb.ToolTransition(
            state=pb.TOOL_CALL_STATE_DONE,
            result_json='{"type":"tool_result","content":"x"}', **tool)),
        event(8, turn_completed=pb.TurnCompleted(turn=1, attempt=1,
                                                 stop_reason="end_turn")),
        event(9, terminal=pb.TaskTerminal(
            state=terminal_state, stop_reason="end_turn",
            error=pb.TaskError(type="overloaded_error", message="busy")
            if terminal_state == pb.TASK_STATE_FAILED else None)),
    ]


class ToolmeshClientTest(unittest.TestCase):

    def setUp(self):
        # Resume at once: these tests count attempts, not seconds.
        self._saved_delay = client.RESUME_INITIAL_DELAY_S
        client.RESUME_INITIAL_DELAY_S = 0.001
        self.server = None

    def tearDown(self):
        client.RESUME_INITIAL_DELAY_S = self._saved_delay
        if self.server is not None:
            self.server.stop(grace=None).wait(5)

    def serve(self, service):
        self.server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=4))
        gen.task_service_pb2_grpc.add_TaskServiceServicer_to_server(
            service, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return f"127.0.0.1:{port}"

    def run_client(self, address, *extra):
        out, err = io.StringIO(), io.StringIO()
        status = client.main(["--orchestrator", address, "--prompt", "hi",
                              *extra], out, err)
        return status, out.getvalue(), err.getvalue()

    def test_completed_task_exits_0_and_prints_one_line_per_event(self):
        service = FakeTaskService(script(pb.TASK_STATE_COMPLETED))
        status, out, err = self.run_client(self.serve(service))
        self.assertEqual(status, 0, err)
        self.assertEqual(out.splitlines(), [
            "task task_1 submitted to " + out.split()[4],
            "[state] running",
            "[turn 1]",
            "Hello",
            '[tool] echo toolu_1 pending input {"message":"x"}',
            "[tool] echo toolu_1 running on w1",
            "[tool] echo toolu_1 done",
            "[turn 1] end_turn",
            "[completed] stop_reason end_turn",
        ])
        self.assertEqual(service.after_seqs, [0])

    def test_submits_all_worker_tools_without_tool_flag(self):
        service = FakeTaskService(script(pb.TASK_STATE_COMPLETED))
        self.run_client(self.serve(service))
        spec = service.submitted[0]
        self.assertTrue(spec.all_worker_tools)
        self.assertEqual(list(spec.client_tools), [])
        self.assertEqual(spec.prompt, "hi")

    def test_tool_flags_name_client_tools(self):
        service = FakeTaskService(script(pb.TASK_STATE_COMPLETED))
        self.run_client(self.serve(service), "--tool", "echo", "--tool", "b")
        spec = service.submitted[0]
        self.assertFalse(spec.all_worker_tools)
        self.assertEqual(list(spec.client_tools), ["echo", "b"])

    def test_failed_task_exits_1(self):
        service = FakeTaskService(script(pb.TASK_STATE_FAILED))
        status, out, _ = self.run_client(self.serve(service))
        self.assertEqual(status, 1)
        self.assertIn("[failed] overloaded_error: busy", out)

    def test_cancelled_task_exits_3(self):
        service = FakeTaskService(script(pb.TASK_STATE_CANCELLED))
        status, out, _ = self.run_client(self.serve(service))
        self.assertEqual(status, 3)
        self.assertEqual(out.splitlines()[-1], "[cancelled]")

    def test_resumes_after_unavailable_from_the_last_seq_seen(self):
        service = FakeTaskService(
            script(pb.TASK_STATE_COMPLETED),
            breaks=[(3, grpc.StatusCode.UNAVAILABLE),
                    (2, grpc.StatusCode.RESOURCE_EXHAUSTED),
                    (1, None)])
        status, out, err = self.run_client(self.serve(service))
        self.assertEqual(status, 0, err)
        self.assertEqual(service.after_seqs, [0, 3, 5, 6])
        self.assertEqual(out.count("[tool] echo toolu_1 done"), 1)
        self.assertEqual(out.count("[turn 1]\n"), 1)
        self.assertIn("Hello\n", out)
        self.assertIn("resuming after seq 3", err)
        self.assertIn("resuming after seq 5", err)
        self.assertIn("resuming after seq 6", err)

    def test_gives_up_after_max_resumes_without_progress(self):
        breaks = [(0, grpc.StatusCode.UNAVAILABLE)] * (client.MAX_RESUMES + 1)
        service = FakeTaskService(script(pb.TASK_STATE_COMPLETED),
                                  breaks=breaks)
        status, _, err = self.run_client(self.serve(service))
        self.assertEqual(status, 1)
        self.assertEqual(len(service.after_seqs), client.MAX_RESUMES + 1)
        self.assertIn("gave up", err)

    def test_not_found_is_not_retried(self):
        service = FakeTaskService(script(pb.TASK_STATE_COMPLETED),
                                  watch_error=grpc.StatusCode.NOT_FOUND)
        status, _, err = self.run_client(self.serve(service))
        self.assertEqual(status, 1)
        self.assertEqual(service.after_seqs, [0])
        self.assertIn("NOT_FOUND", err)

    def test_token_is_sent_as_bearer_metadata_on_every_call(self):
        service = FakeTaskService(script(pb.TASK_STATE_COMPLETED))
        status, _, err = self.run_client(self.serve(service), "--token", "t0k")
        self.assertEqual(status, 0, err)
        self.assertEqual(service.authorizations, ["Bearer t0k", "Bearer t0k"])

    def test_unreachable_orchestrator_exits_1_with_one_line(self):
        # A port that was just bound and released has no listener.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        status, out, err = self.run_client(f"127.0.0.1:{port}")
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("toolmesh_client: submit: UNAVAILABLE"),
                        err)
        self.assertEqual(len(err.splitlines()), 1)


if __name__ == "__main__":
    unittest.main()
