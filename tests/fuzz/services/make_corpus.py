#!/usr/bin/env python3
"""Writes the seed corpora of the tests/fuzz/services targets.

Run from anywhere: python3 tests/fuzz/services/make_corpus.py
The protos are encoded by hand (a few lines of wire format), so this needs
no protobuf package. Each seed is named after what it exercises; see the
input layouts at the top of each *_fuzz.cc.
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vfield(num, value):
    return varint(num << 3) + varint(value)


def lfield(num, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def duration(seconds, nanos=0):
    return vfield(1, seconds) + (vfield(2, nanos) if nanos else b"")


# --- worker_service.proto -------------------------------------------------
def tool_def(name, schema='{"type":"object"}', description=""):
    return lfield(1, name) + lfield(2, description) + lfield(3, schema)


def hello(worker_id="w1", version=1, tools=(("echo",),), slots=2):
    out = lfield(1, worker_id) + vfield(2, version)
    for t in tools:
        out += lfield(3, tool_def(*t))
    return out + vfield(4, slots) + lfield(5, "seed")


def wm_hello(**kw):
    return lfield(1, hello(**kw))


def wm_heartbeat(running=(), free_slots=1):
    out = b""
    for task_id, tool_use_id, attempt in running:
        out += lfield(1, lfield(1, task_id) + lfield(2, tool_use_id) +
                      vfield(3, attempt))
    return lfield(2, out + vfield(2, free_slots))


def wm_result(task_id="", tool_use_id="", attempt=0, content='"ok"',
              is_error=False):
    out = lfield(1, task_id) + lfield(2, tool_use_id) + vfield(3, attempt)
    out += lfield(4, content) + vfield(5, 1 if is_error else 0)
    out += lfield(6, duration(0, 5000000))
    return lfield(3, out)


def wm_draining(grace_s):
    return lfield(4, lfield(1, duration(grace_s)))


def wm_return(task_id="", tool_use_id="", attempt=0, reason="draining"):
    return lfield(5, lfield(1, task_id) + lfield(2, tool_use_id) +
                  vfield(3, attempt) + lfield(4, reason))


def om_welcome(heartbeat_s=2, nanos=0):
    return lfield(1, vfield(1, 1) + lfield(2, duration(heartbeat_s, nanos)) +
                  lfield(3, duration(10)) + lfield(4, "echo"))


def om_assignment(task_id, tool_use_id, attempt, name, input_json,
                  deadline_s=0):
    out = lfield(1, task_id) + lfield(2, tool_use_id) + vfield(3, attempt)
    out += lfield(4, name) + lfield(5, input_json)
    if deadline_s:
        out += lfield(6, vfield(1, deadline_s))
    return lfield(2, out)


def om_cancel(task_id, tool_use_id, attempt, reason=1, message="seed"):
    return lfield(3, lfield(1, task_id) + lfield(2, tool_use_id) +
                  vfield(3, attempt) + vfield(4, reason) + lfield(5, message))


def om_rejected(code, message):
    return lfield(4, vfield(1, code) + lfield(2, message) + vfield(3, 1))


def rec(payload):
    """A length-prefixed record (2 bytes little-endian)."""
    return struct.pack("<H", len(payload)) + payload


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 4096, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- orchestrator_worker_messages ------------------------------------------
def owm():
    t = "orchestrator_worker_messages"
    DEEP, PATCH, HELLO, RAW, END = 1, 2, 4, 8, 16
    msg = lambda m: b"\x00" + rec(m)
    adv = lambda n: b"\x01" + bytes([n])
    answer = b"\x02"
    reconnect = b"\x03"
    write(t, "result_then_end_turn",
          bytes([DEEP | PATCH | END]) + msg(wm_result(content='"echo hi"')) +
          answer)
    write(t, "error_result",
          bytes([DEEP | PATCH | END]) +
          msg(wm_result(content='[{"type":"text","text":"boom"}]',
                        is_error=True)) + answer)
    write(t, "heartbeat_then_lease_expiry",
          bytes([DEEP | PATCH]) + msg(wm_heartbeat([("x", "y", 0)])) +
          adv(20) + msg(wm_heartbeat([])) + adv(60) + answer)
    write(t, "drain_and_return",
          bytes([DEEP | PATCH]) + msg(wm_draining(1)) + msg(wm_return()) +
          adv(8) + answer)
    write(t, "reconnect_redelivery",
          bytes([DEEP | PATCH | END]) + reconnect + answer +
          msg(wm_result(content='"again"')) + answer)
    write(t, "stale_and_duplicate_results",
          bytes([DEEP | PATCH | END]) + msg(wm_result(attempt=7)) +
          msg(wm_result()) + msg(wm_result()) + answer)
    write(t, "empty_message", bytes([DEEP]) + msg(b""))
    write(t, "start_to_close_timeout",
          bytes([DEEP]) + adv(255) + adv(255) + answer)
    write(t, "raw_second_hello",
          bytes([RAW | HELLO]) + wm_hello(worker_id="raw", tools=[("echo",)]))
    write(t, "hello_without_slots",
          bytes([DEEP | HELLO]) + rec(hello(slots=0)) + msg(wm_heartbeat()))
    write(t, "hello_bad_schema",
          bytes([DEEP | HELLO]) +
          rec(hello(tools=[("echo", "[1,2]"), ("echo", "{}")])))
    write(t, "hello_wrong_protocol",
          bytes([HELLO]) + rec(hello(version=2)))
    write(t, "unknown_call_result",
          bytes([0]) + msg(wm_result("task_x", "toolu_x", 1)))


# --- orchestrator_submit ----------------------------------------------------
def spec(**f):
    out = lfield(1, f.get("model", "claude-fuzz"))
    out += vfield(2, f.get("max_tokens", 1024))
    if "system_text" in f:
        out += lfield(3, f["system_text"])
    if "prompt" in f:
        out += lfield(5, f["prompt"])
    if "messages" in f:
        out += lfield(6, json.dumps(f["messages"]))
    for name in f.get("client_tools", []):
        out += lfield(7, name)
    for tool in f.get("server_tools", []):
        out += lfield(9, json.dumps(tool))
    if "max_turns" in f:
        out += vfield(12, f["max_turns"])
    if "timeout_s" in f:
        out += lfield(14, duration(f["timeout_s"]))
    if "key" in f:
        out += lfield(15, f["key"])
    for k, v in f.get("labels", {}).items():
        out += lfield(16, lfield(1, k) + lfield(2, v))
    return lfield(1, out)


def submit():
    t = "orchestrator_submit"
    FIELDS, PROMPT, BLOCKS, CLIENT, KEY, WORKER, NOMAX = 1, 2, 4, 8, 16, 32, 64
    sep = b"\xff"
    j = lambda v: json.dumps(v).encode()
    write(t, "binary_prompt", b"\x00" + spec(prompt="hello"))
    write(t, "binary_key_labels_timeout",
          b"\x00" + spec(prompt="hi", key="k1", labels={"team": "a"},
                         timeout_s=30, max_turns=3, client_tools=["echo"]))
    write(t, "binary_no_model", b"\x00" + spec(model="", prompt="x"))
    write(t, "binary_zero_timeout", b"\x00" + spec(prompt="x", timeout_s=0) +
          b"")
    write(t, "fields_full",
          bytes([FIELDS | CLIENT | KEY]) +
          j([{"role": "user", "content": "hi"}]) + sep + b"be brief" + sep +
          j({"type": "auto"}) + sep +
          j({"type": "enabled", "budget_tokens": 1024}) + sep +
          j({"type": "web_search_20250305", "name": "web_search"}))
    write(t, "fields_prompt_worker_tools",
          bytes([FIELDS | PROMPT | WORKER | BLOCKS]) + b"what time is it" +
          sep + j([{"type": "text", "text": "system"}]))
    write(t, "fields_pending_tool_use",
          bytes([FIELDS]) +
          j([{"role": "user", "content": "hi"},
             {"role": "assistant", "content": [
                 {"type": "tool_use", "id": "toolu_1", "name": "echo",
                  "input": {}}]}]))
    write(t, "fields_tool_round_trip",
          bytes([FIELDS | CLIENT]) +
          j([{"role": "user", "content": "hi"},
             {"role": "assistant", "content": [
                 {"type": "text", "text": "calling"},
                 {"type": "tool_use", "id": "toolu_1", "name": "echo",
                  "input": {"text": "a"}}]},
             {"role": "user", "content": [
                 {"type": "tool_result", "tool_use_id": "toolu_1",
                  "content": "a"}]}]))
    write(t, "fields_deferred_server_call",
          bytes([FIELDS]) +
          j([{"role": "user", "content": "search"},
             {"role": "assistant", "content": [
                 {"type": "server_tool_use", "id": "srvtoolu_1",
                  "name": "web_search", "input": {"query": "q"}},
                 {"type": "tool_use", "id": "toolu_2", "name": "echo",
                  "input": {}}]},
             {"role": "user", "content": [
                 {"type": "tool_result", "tool_use_id": "toolu_2",
                  "content": "x"}]},
             {"role": "assistant", "content": [
                 {"type": "web_search_tool_result",
                  "tool_use_id": "srvtoolu_1", "content": []},
                 {"type": "text", "text": "done"}]},
             {"role": "user", "content": "thanks"}]) + sep + sep + sep + sep +
          j({"type": "web_search_20250305", "name": "web_search"}))
    write(t, "fields_thinking_history",
          bytes([FIELDS]) +
          j([{"role": "user", "content": "hi"},
             {"role": "assistant", "content": [
                 {"type": "thinking", "thinking": "hm", "signature": "s"},
                 {"type": "tool_use", "id": "toolu_1", "name": "echo",
                  "input": {}}]},
             {"role": "user", "content": [
                 {"type": "tool_result", "tool_use_id": "toolu_1",
                  "content": "a"}]}]) + sep + sep + sep +
          j({"type": "enabled", "budget_tokens": 2048}))
    write(t, "fields_no_max_tokens", bytes([FIELDS | PROMPT | NOMAX]) + b"x")
    write(t, "fields_bad_json", bytes([FIELDS]) + b'[{"role":"user",')
    write(t, "fields_empty_array", bytes([FIELDS]) + b"[]")


# --- worker_orchestrator_messages -------------------------------------------
def wom():
    t = "worker_orchestrator_messages"
    RAW, SMALL = 1, 2
    TOOLS = {"echo": 0, "sleep": 1, "fail": 2, "pick": 3, "nope": 4}

    def assign(tool, call, attempt, deadline, input_json):
        data = input_json.encode()
        return bytes([1, TOOLS[tool], call, attempt, deadline]) + \
            struct.pack("<H", len(data)) + data

    cancel = lambda call, attempt, reason=1: bytes([2, call, attempt, reason])
    adv = lambda n: bytes([3, n])
    welcome = lambda ms: b"\x04" + struct.pack("<H", ms)
    drain = lambda n: bytes([5, n])
    msg = lambda m: b"\x00" + rec(m)
    write(t, "welcome_echo_sleep_heartbeat",
          bytes([0]) + welcome(500) + assign("echo", 0, 1, 0, '{"text":"hi"}') +
          assign("sleep", 1, 1, 0, '{"ms": 300}') + adv(2) + adv(5))
    write(t, "invalid_inputs",
          bytes([0]) + welcome(1000) +
          assign("echo", 0, 1, 0, '{"text": 5}') +
          assign("pick", 1, 1, 0,
                 '{"unit":"k","items":[{"id":"ABC"},{"id":1}]}') +
          assign("fail", 2, 1, 0, '{"message":"x","extra":1}') +
          assign("nope", 3, 1, 0, "{}") +
          assign("echo", 0, 2, 0, "{not json"))
    write(t, "fail_and_duplicate_assignment",
          bytes([0]) + assign("fail", 0, 1, 0, '{"message":"boom"}') +
          assign("sleep", 1, 1, 0, '{"ms": 1000}') +
          assign("sleep", 1, 1, 0, '{"ms": 1000}') + adv(20))
    write(t, "cancel_running_and_queued",
          bytes([0]) + welcome(200) +
          assign("sleep", 0, 1, 0, '{"ms": 5000}') +
          assign("sleep", 1, 1, 0, '{"ms": 5000}') +
          assign("sleep", 2, 1, 0, '{"ms": 5000}') +
          cancel(2, 1) + cancel(0, 1, 4) + adv(60))
    write(t, "drain_with_queue",
          bytes([0]) + welcome(200) +
          assign("sleep", 0, 1, 0, '{"ms": 5000}') +
          assign("sleep", 1, 1, 0, '{"ms": 500}') +
          assign("sleep", 2, 1, 0, '{"ms": 5000}') + drain(20) +
          assign("echo", 3, 1, 0, '{"text":"late"}') + adv(10) + adv(20))
    write(t, "deadline_timeout",
          bytes([0]) + assign("sleep", 0, 1, 5, '{"ms": 10000}') + adv(10))
    write(t, "small_result_limit",
          bytes([SMALL]) +
          assign("echo", 0, 1, 0,
                 '{"text":"' + "x" * 60 + '","n": 12345678}') +
          assign("fail", 1, 1, 0, '{"message":"' + "y" * 200 + '"}'))
    write(t, "raw_rejected",
          bytes([RAW]) + om_rejected(9, "protocol_version 2 not supported"))
    write(t, "raw_messages",
          bytes([0]) + msg(om_welcome(1)) +
          msg(om_assignment("t", "toolu_9", 1, "echo", '{"text":"a"}',
                            deadline_s=1700000005)) +
          msg(om_cancel("t", "toolu_9", 1)) + msg(b"") + adv(30))


# --- worker_tool_input ---------------------------------------------------------
def wti():
    t = "worker_tool_input"
    sep = b"\xff"
    j = lambda v: json.dumps(v).encode()
    write(t, "exec_templates",
          j([{"name": "weather", "description": "d",
              "input_schema": {"type": "object",
                               "properties": {"city": {"type": "string"},
                                              "days": {"type": "integer"}},
                               "required": ["city"]},
              "executor": {"type": "exec",
                           "argv": ["python3", "w.py", "--city={input.city}",
                                    "{input.days}", "--raw={input.opts}"],
                           "timeout_ms": 1000,
                           "env_allow": ["PATH"], "env": {"A_B": "c"},
                           "limits": {"cpu_seconds": 1, "open_files": 16}}}])
          + sep + j({"city": "Paris", "days": 3, "opts": {"a": [1, None]}}))
    write(t, "exec_missing_field",
          j([{"name": "t", "input_schema": {"type": "object"},
              "executor": {"type": "exec", "argv": ["echo", "{input.x}"]}}])
          + sep + j({"y": 1}))
    write(t, "exec_nul_in_value",
          j([{"name": "t", "input_schema": {"type": "object"},
              "executor": {"type": "exec", "argv": ["echo", "a{input.x}b"],
                           "cwd": "/tmp"}}])
          + sep + b'{"x": "a\\u0000b"}')
    write(t, "exec_not_object_input",
          j([{"name": "t", "input_schema": {"type": "object"},
              "executor": {"type": "exec", "argv": ["echo", "{input.x}"]}}])
          + sep + b"[1,2]")
    write(t, "builtin_http_schema",
          j([{"name": "a", "input_schema": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 1},
                               "s": {"type": "string", "pattern": "^[a-z]+$"},
                               "e": {"enum": ["x", "y"]},
                               "l": {"type": "array", "items": {"type": "number"},
                                     "maxItems": 2}},
                "required": ["n"], "additionalProperties": False},
              "executor": {"type": "builtin", "name": "echo"}},
             {"name": "b", "cache_control": {"type": "ephemeral"},
              "input_schema": {"type": "object"},
              "executor": {"type": "http", "url": "http://127.0.0.1:1/x",
                           "timeout_ms": 5}}])
          + sep + j({"n": 0, "s": "ABC", "e": "z", "l": [1, 2, "3"], "q": 1}))
    write(t, "bad_pattern_schema",
          j([{"name": "a", "input_schema": {
                "type": "object",
                "properties": {"s": {"type": "string", "pattern": "(["}}},
              "executor": {"type": "builtin", "name": "sleep"}}])
          + sep + j({"s": "x"}))
    write(t, "ref_schema",
          j([{"name": "a", "input_schema": {
                "type": "object", "$ref": "#/definitions/x",
                "definitions": {"x": {"type": "object"}}},
              "executor": {"type": "builtin", "name": "fail"}}]))
    write(t, "config_errors",
          j([{"name": "bad name!", "input_schema": {"type": "object"},
              "executor": {"type": "exec", "argv": ["{input.x}"]}}]))
    write(t, "typo_in_template",
          j([{"name": "t", "input_schema": {"type": "object"},
              "executor": {"type": "exec", "argv": ["x", "{input.}"],
                           "timout_ms": 5}}]))


if __name__ == "__main__":
    owm()
    submit()
    wom()
    wti()
