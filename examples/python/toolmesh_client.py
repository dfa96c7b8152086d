#!/usr/bin/env python3
"""toolmesh_client: submit a task to a toolmesh orchestrator and print its events.

A small example of using toolmesh's gRPC API (toolmesh.v1.TaskService) from
Python with Debian's python3-grpcio and python3-protobuf. The Python gRPC code is
generated from the repository's proto/ folder at run time into a temporary
directory, with `protoc` (protobuf-compiler) and `grpc_python_plugin`
(protobuf-compiler-grpc), whose versions match Debian's Python runtime; when
those are missing, `python3 -m grpc_tools.protoc` (python3-grpc-tools) is
used instead.

It submits one task (every tool the connected workers serve, unless --tool
names some), watches the task's events and prints one line per event, with
streamed text inline. A broken event stream (UNAVAILABLE, RESOURCE_EXHAUSTED,
or an early end) is resumed with WatchTask(after_seq = the last seq seen), so
no event is printed twice and none is missed.

Exit status: 0 the task completed, 1 it failed (or the client could not reach
the orchestrator or lost the event stream for good), 2 bad usage, 3 the task
was cancelled, 130 interrupted (the task keeps running).

Usage:
  python3 examples/python/toolmesh_client.py --orchestrator HOST:PORT \
      [--token T] --prompt TEXT [--tool NAME ...]
"""

import argparse
import importlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_INTERRUPTED = 130

DEFAULT_ORCHESTRATOR = "127.0.0.1:7070"
DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_MAX_TOKENS = 4096
# Deadline of each unary call (SubmitTask, ListWorkers).
UNARY_TIMEOUT_S = 10.0
# Resuming a broken event stream: 0.5 s x 2^n, capped at 8 s, with jitter;
# give up after this many consecutive attempts that brought no new event.
RESUME_INITIAL_DELAY_S = 0.5
RESUME_MAX_DELAY_S = 8.0
MAX_RESUMES = 8
# Longest tool input shown on a [tool] line.
MAX_INPUT_PREVIEW = 200

PROTO_FILES = ("toolmesh/v1/task.proto", "toolmesh/v1/task_service.proto")


class ClientError(Exception):
    """A failure that ends the client with one line on stderr."""

    def __init__(self, message, exit_status=EXIT_FAILED):
        super().__init__(message)
        self.exit_status = exit_status


# ---------------------------------------------------------------------------
# Generated code.


def default_proto_dir():
    """The repository's proto/ folder, two levels above this file."""
    return pathlib.Path(__file__).resolve().parent.parent.parent / "proto"


def generate_bindings(proto_dir, out_dir):
    """Writes toolmesh/v1/*_pb2.py and *_pb2_grpc.py into out_dir.

    Raises ClientError when no code generator is installed or it fails.
    """
    proto_dir = pathlib.Path(proto_dir)
    for name in PROTO_FILES:
        if not (proto_dir / name).is_file():
            raise ClientError(f"no {name} under {proto_dir} (see --proto-dir)")
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN") or shutil.which(
        "grpc_python_plugin")
    if protoc and plugin:
        command = [protoc, f"--plugin=protoc-gen-grpc_python={plugin}",
                   f"--grpc_python_out={out_dir}"]
    else:
        try:
            importlib.import_module("grpc_tools.protoc")
        except ImportError:
            raise ClientError(
                "cannot generate the gRPC code: install protobuf-compiler and "
                "protobuf-compiler-grpc (or python3-grpc-tools)") from None
        command = [sys.executable, "-m", "grpc_tools.protoc",
                   f"--grpc_python_out={out_dir}"]
    command += [f"-I{proto_dir}", f"--python_out={out_dir}", *PROTO_FILES]
    result = subprocess.run(command, cwd=proto_dir, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise ClientError("generating the gRPC code failed: " +
                          " ".join(result.stderr.split()))


class Bindings:
    """The generated modules: task_pb2, task_service_pb2, task_service_pb2_grpc."""

    def __init__(self, task_pb2, task_service_pb2, task_service_pb2_grpc):
        self.task_pb2 = task_pb2
        self.task_service_pb2 = task_service_pb2
        self.task_service_pb2_grpc = task_service_pb2_grpc


def load_bindings(proto_dir):
    """Generates the gRPC code into a temporary directory and imports it.

    The directory is removed once the modules are loaded (Python keeps them
    in memory). Raises ClientError on failure.
    """
    with tempfile.TemporaryDirectory(prefix="toolmesh-grpc-") as out_dir:
        generate_bindings(proto_dir, out_dir)
        sys.path.insert(0, out_dir)
        try:
            return Bindings(
                importlib.import_module("toolmesh.v1.task_pb2"),
                importlib.import_module("toolmesh.v1.task_service_pb2"),
                importlib.import_module("toolmesh.v1.task_service_pb2_grpc"))
        except ImportError as e:
            raise ClientError(f"cannot import the generated code: {e}") from None
        finally:
            sys.path.remove(out_dir)


# ---------------------------------------------------------------------------
# Rendering.


def enum_name(enum_type, value, prefix):
    """"TOOL_CALL_STATE_DONE" -> "done"; an unknown number -> "unknown(N)"."""
    try:
        name = enum_type.Name(value)
    except ValueError:
        return f"unknown({value})"
    if name.startswith(prefix):
        name = name[len(prefix):]
    return name.lower()


def one_line(text):
    return " ".join(text.split())


def parse_json(text):
    """The JSON value of text, or None when it is empty or not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def usage_summary(usage_json):
    """ "input_tokens=10 output_tokens=20" from a usage object's numbers."""
    usage = parse_json(usage_json)
    if not isinstance(usage, dict):
        return ""
    return " ".join(f"{key}={value}" for key, value in usage.items()
                    if isinstance(value, (int, float))
                    and not isinstance(value, bool))


class EventPrinter:
    """Prints task events: streamed text as it comes, one line per other event.

    Lines look like the `toolmesh submit --watch` CLI's: "[turn 1]",
    "[tool] echo toolu_01 done", "[completed] stop_reason end_turn".
    """

    def __init__(self, pb, out):
        self._pb = pb  # the task_pb2 module
        self._out = out
        self._line_open = False
        self._block = None  # (turn, attempt, block_index, is_thinking)

    def on_event(self, event):
        kind = event.WhichOneof("event")
        pb = self._pb
        if kind == "state_changed":
            state = event.state_changed.state
            # Terminal states are announced by the terminal event itself.
            if state not in (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED,
                             pb.TASK_STATE_CANCELLED):
                self._line("[state] " + self._task_state(state))
        elif kind == "turn_started":
            e = event.turn_started
            self._line(f"[turn {e.turn} attempt {e.attempt}]"
                       if e.attempt > 1 else f"[turn {e.turn}]")
        elif kind == "turn_retrying":
            e = event.turn_retrying
            detail = ""
            if e.http_status:
                detail = f" (HTTP {e.http_status}" + (
                    f": {one_line(e.message)}" if e.message else "") + ")"
            elif e.message:
                detail = f" ({one_line(e.message)})"
            delay = e.delay.seconds + e.delay.nanos / 1e9
            self._line(f"[retry] turn {e.turn} attempt {e.attempt} failed: "
                       f"{e.reason}{detail}; retrying in {delay:.1f}s; "
                       "the output of that attempt above is void")
        elif kind == "turn_completed":
            e = event.turn_completed
            usage = usage_summary(e.usage_json)
            self._line(f"[turn {e.turn}] {e.stop_reason}" +
                       (f" ({usage})" if usage else ""))
        elif kind == "text_delta":
            e = event.text_delta
            self._delta((e.turn, e.attempt, e.block_index, False), e.text)
        elif kind == "thinking_delta":
            e = event.thinking_delta
            self._delta((e.turn, e.attempt, e.block_index, True), e.thinking)
        elif kind == "tool_transition":
            self._tool(event.tool_transition)
        elif kind == "terminal":
            self._terminal(event.terminal)
        self._out.flush()

    def finish(self):
        """Ends a line of streamed text that is still open."""
        self._end_line()
        self._out.flush()

    def _task_state(self, state):
        return enum_name(self._pb.TaskState, state, "TASK_STATE_")

    def _tool(self, e):
        pb = self._pb
        state = enum_name(pb.ToolCallState, e.state, "TOOL_CALL_STATE_")
        line = f"[tool] {e.name} {e.tool_use_id} {state}"
        if e.state == pb.TOOL_CALL_STATE_PENDING:
            if e.kind == pb.TOOL_KIND_SERVER:
                line += " (server tool)"
        elif e.state == pb.TOOL_CALL_STATE_RUNNING:
            if e.worker_id:
                line += f" on {e.worker_id}"
            if e.attempt > 1:
                line += f" (attempt {e.attempt})"
        elif e.state == pb.TOOL_CALL_STATE_DONE:
            result = parse_json(e.result_json)
            if isinstance(result, dict) and result.get("is_error") is True:
                line += " (the tool reported an error)"
        elif e.state == pb.TOOL_CALL_STATE_ERROR:
            line += " " + enum_name(pb.ToolErrorReason, e.reason,
                                    "TOOL_ERROR_REASON_")
            if e.message:
                line += ": " + one_line(e.message)
        if e.input_json:
            value = parse_json(e.input_json)
            text = (json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                    if value is not None else one_line(e.input_json))
            if len(text) > MAX_INPUT_PREVIEW:
                text = text[:MAX_INPUT_PREVIEW] + "..."
            line += " input " + text
        self._line(line)

    def _terminal(self, e):
        pb = self._pb
        if e.state == pb.TASK_STATE_COMPLETED:
            line = "[completed] stop_reason " + (e.stop_reason or "-")
        elif e.state == pb.TASK_STATE_FAILED:
            line = "[failed] " + (self._error(e.error) if e.HasField("error")
                                  else "error")
        elif e.state == pb.TASK_STATE_CANCELLED:
            line = "[cancelled]"
            if e.HasField("error") and e.error.message:
                line += " " + one_line(e.error.message)
        else:
            line = "[ended] " + self._task_state(e.state)
        usage = usage_summary(e.usage_json)
        if usage:
            line += "; usage " + usage
        self._line(line)

    @staticmethod
    def _error(error):
        text = error.type or "error"
        if error.http_status:
            text += f" (HTTP {error.http_status})"
        if error.message:
            text += ": " + one_line(error.message)
        return text

    def _delta(self, block, text):
        if not text:
            return
        if block != self._block:
            self._end_line()
            if block[3]:
                self._write("[thinking] ")
            self._block = block
        self._write(text)

    def _end_line(self):
        if self._line_open:
            self._write("\n")
        self._block = None

    def _line(self, text):
        self._end_line()
        self._write(text + "\n")

    def _write(self, text):
        if text:
            self._out.write(text)
            self._line_open = not text.endswith("\n")


# ---------------------------------------------------------------------------
# RPCs.


def rpc_error_text(error):
    """ "UNAVAILABLE: failed to connect ..." for a grpc.RpcError."""
    code = error.code()
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {one_line(error.details() or '')}"


def build_spec(pb, args):
    spec = pb.TaskSpec(model=args.model, max_tokens=args.max_tokens,
                       prompt=args.prompt)
    if args.tool:
        spec.client_tools.extend(args.tool)
    else:
        spec.all_worker_tools = True
    if args.max_turns:
        spec.max_turns = args.max_turns
    if args.system:
        spec.system_text = args.system
    return spec


def wait_for_workers(grpc, gen, service, metadata, tools, timeout_s):
    """Polls ListWorkers until connected workers serve every name in `tools`
    (any worker at all when `tools` is empty). Raises ClientError when the
    deadline passes."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        try:
            response = service.ListWorkers(
                gen.task_service_pb2.ListWorkersRequest(),
                metadata=metadata, timeout=UNARY_TIMEOUT_S)
            served = set()
            live = [w for w in response.workers if not w.draining]
            for worker in live:
                served.update(worker.tools)
            missing = [t for t in tools if t not in served]
            if live and not missing:
                return
            last_error = ("no worker is connected" if not live else
                          "no worker serves " + ", ".join(missing))
        except grpc.RpcError as e:
            code = e.code()
            if code not in (grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ClientError("ListWorkers: " + rpc_error_text(e)) from None
            last_error = rpc_error_text(e)
        if time.monotonic() >= deadline:
            raise ClientError(f"workers not ready after {timeout_s:g}s: "
                              f"{last_error}")
        time.sleep(0.1)


def resume_delay(failures, rng):
    """Backoff before resume attempt `failures` (1-based), with jitter."""
    delay = min(RESUME_MAX_DELAY_S,
                RESUME_INITIAL_DELAY_S * (2 ** (failures - 1)))
    return delay * (0.75 + 0.25 * rng.random())


def watch(grpc, gen, service, task_id, metadata, on_event, err,
          sleep=time.sleep, max_resumes=MAX_RESUMES):
    """Streams the task's events to on_event until its terminal event.

    Resumes with after_seq on UNAVAILABLE, RESOURCE_EXHAUSTED or a stream
    that ends early. Returns the terminal TaskState; raises ClientError when
    the stream cannot be resumed.
    """
    rng = random.Random()
    last_seq = 0
    failures = 0  # consecutive attempts that brought no new event
    while True:
        request = gen.task_service_pb2.WatchTaskRequest(task_id=task_id,
                                                          after_seq=last_seq)
        call = service.WatchTask(request, metadata=metadata)
        progress = False
        why = "the stream ended before the task did"
        try:
            for event in call:
                # The contract promises no duplicates; never print one twice.
                if event.seq <= last_seq:
                    continue
                last_seq = event.seq
                progress = True
                on_event(event)
                if event.WhichOneof("event") == "terminal":
                    call.cancel()
                    return event.terminal.state
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise ClientError(f"watch {task_id}: " +
                                  rpc_error_text(e)) from None
            why = rpc_error_text(e)
        failures = 1 if progress else failures + 1
        if failures > max_resumes:
            raise ClientError(
                f"lost the event stream of task {task_id} ({why}); gave up "
                f"after {max_resumes} attempts to resume after seq {last_seq}")
        delay = resume_delay(failures, rng)
        print(f"toolmesh_client: event stream of task {task_id} broke ({why});"
              f" resuming after seq {last_seq} in {delay:.1f}s", file=err,
              flush=True)
        sleep(delay)


def exit_status_of(pb, state):
    if state == pb.TASK_STATE_COMPLETED:
        return EXIT_COMPLETED
    if state == pb.TASK_STATE_CANCELLED:
        return EXIT_CANCELLED
    return EXIT_FAILED


# ---------------------------------------------------------------------------
# Command line.


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="toolmesh_client.py",
        description="Submit a task to a toolmesh orchestrator and print its "
                    "events. Exit status: 0 completed, 1 failed, 2 bad usage, "
                    "3 cancelled.")
    parser.add_argument(
        "--orchestrator",
        default=os.environ.get("TOOLMESH_ORCHESTRATOR", DEFAULT_ORCHESTRATOR),
        metavar="HOST:PORT",
        help="the orchestrator's gRPC address (default: $TOOLMESH_ORCHESTRATOR "
             f"or {DEFAULT_ORCHESTRATOR})")
    parser.add_argument(
        "--token", default=os.environ.get("TOOLMESH_CLIENT_TOKEN", ""),
        metavar="T",
        help="client token, sent as `authorization: Bearer T` (default: "
             "$TOOLMESH_CLIENT_TOKEN; none when empty)")
    parser.add_argument("--prompt", required=True, metavar="TEXT",
                        help="the user prompt that starts the task")
    parser.add_argument(
        "--tool", action="append", default=[], metavar="NAME",
        help="a client tool to offer the model (repeatable; default: every "
             "tool the connected workers serve)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model id (default {DEFAULT_MODEL})")
    parser.add_argument("--max-tokens", type=positive_int,
                        default=DEFAULT_MAX_TOKENS, metavar="N",
                        help=f"max_tokens per turn (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--max-turns", type=positive_int, default=0,
                        metavar="N",
                        help="upper bound on model turns (default: the "
                             "orchestrator's)")
    parser.add_argument("--system", default="", metavar="TEXT",
                        help="a plain-text system prompt")
    parser.add_argument(
        "--wait-for-workers", type=non_negative_float, default=0,
        metavar="SECONDS",
        help="before submitting, wait up to SECONDS until connected workers "
             "serve every --tool (any worker when no --tool is given)")
    parser.add_argument(
        "--proto-dir", default=str(default_proto_dir()), metavar="DIR",
        help="folder holding toolmesh/v1/*.proto (default: the repository's "
             "proto/)")
    args = parser.parse_args(argv)
    host, _, port = args.orchestrator.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--orchestrator expects HOST:PORT, got "
                     f"{args.orchestrator!r}")
    if not args.prompt:
        parser.error("--prompt expects a non-empty text")
    return args


def run(args, out, err):
    try:
        import grpc  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ClientError("the grpc module is missing: install python3-grpcio "
                          "and python3-protobuf (Debian) and run this with "
                          "/usr/bin/python3") from None
    gen = load_bindings(args.proto_dir)
    pb = gen.task_pb2
    metadata = ((("authorization", "Bearer " + args.token),)
                if args.token else ())
    with grpc.insecure_channel(args.orchestrator) as channel:
        service = gen.task_service_pb2_grpc.TaskServiceStub(channel)
        if args.wait_for_workers > 0:
            wait_for_workers(grpc, gen, service, metadata, args.tool,
                             args.wait_for_workers)
        request = gen.task_service_pb2.SubmitTaskRequest(
            spec=build_spec(pb, args))
        try:
            response = service.SubmitTask(request, metadata=metadata,
                                       timeout=UNARY_TIMEOUT_S)
        except grpc.RpcError as e:
            raise ClientError("submit: " + rpc_error_text(e)) from None
        task_id = response.task_id
        print(f"task {task_id} submitted to {args.orchestrator}", file=out,
              flush=True)
        printer = EventPrinter(pb, out)
        try:
            state = watch(grpc, gen, service, task_id, metadata,
                          printer.on_event, err)
        except KeyboardInterrupt:
            printer.finish()
            print(f"toolmesh_client: interrupted; task {task_id} keeps running",
                  file=err)
            return EXIT_INTERRUPTED
        return exit_status_of(pb, state)


def main(argv=None, out=sys.stdout, err=sys.stderr):
    args = parse_args(argv)
    try:
        return run(args, out, err)
    except ClientError as e:
        print(f"toolmesh_client: {e}", file=err)
        return e.exit_status
    except KeyboardInterrupt:
        print("toolmesh_client: interrupted", file=err)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
