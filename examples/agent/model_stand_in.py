#!/usr/bin/env python3
"""A stand-in for the Anthropic Messages API (not a model: it replays scripts).

SelfHeal's tests and demo point the real Claude Code CLI at this server
(ANTHROPIC_BASE_URL) so that a fix runs offline and the same way every time.
For each request it finds the scripted conversation whose pattern matches the
first user message, answers the next scripted turn (tool calls the CLI then
really executes, or text), records the request as one JSON line, and, when
asked to, misbehaves on purpose (slow, HTTP errors, hang, garbage).

    python3 model_stand_in.py --script SCRIPT.json --log REQUESTS.jsonl \
        [--port N] [--host 127.0.0.1]

Prints "PORT <n>" once listening; serves until stdin reaches EOF or SIGTERM.
See model_stand_in.md for the script and log formats. Standard library only.
"""

import argparse
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 16 * 1024 * 1024
MODES = ("normal", "slow", "hang", "error", "garbage")
DEFAULT_CWD = "/checkout"
DEFAULT_FALLBACK = "No scripted conversation for this prompt."
PIECE = 48  # characters per streamed delta

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

REASONS = {529: "Overloaded"}  # what the standard library has no phrase for

GARBAGE_STREAM = (
    b"the stand-in model mumbles something about bananas\n"
    b"event: message_start\n"
    b'data: {"type": "message_start", "message": {"id": "msg_garbage", "con\n'
    b"\n"
    b"zebra quantum teapot\n\n"
)
GARBAGE_JSON = (
    b'{"id": "msg_garbage", "type": "message", "content": [{"type": "te\n'
    b"zebra quantum teapot\n"
)


def error_type(status):
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


# ---------------------------------------------------------------- the script


class ScriptError(Exception):
    pass


def _strings(value, where):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        return list(value)
    raise ScriptError(f"{where}: expected a string or a non-empty list of strings")


def _tool_call(spec, where):
    if not isinstance(spec, dict) or not isinstance(spec.get("tool"), str) or not spec["tool"]:
        raise ScriptError(f"{where}: a tool call needs \"tool\": NAME")
    tool_input = spec.get("input", {})
    if not isinstance(tool_input, dict):
        raise ScriptError(f"{where}: \"input\" must be an object")
    return {"tool": spec["tool"], "input": tool_input}


def _turn(turn, where):
    if not isinstance(turn, dict):
        raise ScriptError(f"{where}: a turn is an object")
    unknown = set(turn) - {"tool", "input", "tools", "text", "expect", "hang"}
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}")
    calls = []
    if "tool" in turn:
        calls.append(_tool_call(turn, where))
    elif "input" in turn:
        raise ScriptError(f"{where}: \"input\" without \"tool\"")
    if "tools" in turn:
        if not isinstance(turn["tools"], list) or not turn["tools"]:
            raise ScriptError(f"{where}: \"tools\" must be a non-empty list")
        calls += [_tool_call(c, f"{where}.tools[{i}]") for i, c in enumerate(turn["tools"])]
    text = turn.get("text")
    if text is not None and not isinstance(text, str):
        raise ScriptError(f"{where}: \"text\" must be a string")
    hang = turn.get("hang", False)
    if not isinstance(hang, bool):
        raise ScriptError(f"{where}: \"hang\" must be true or false")
    if not calls and not text and not hang:
        raise ScriptError(f"{where}: a turn needs \"tool\", \"tools\", \"text\" or \"hang\"")
    expect = _strings(turn["expect"], f"{where}.expect") if "expect" in turn else []
    return {"text": text, "calls": calls, "expect": expect, "hang": hang}


def load_script(path):
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ScriptError(f"cannot read {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ScriptError("the script is a JSON object")
    mode = raw.get("mode", "normal")
    if mode not in MODES:
        raise ScriptError(f"mode must be one of {', '.join(MODES)}")
    delay_ms = raw.get("delay_ms", 0)
    if not isinstance(delay_ms, (int, float)) or delay_ms < 0:
        raise ScriptError("delay_ms must be a number >= 0")
    errors = raw.get("errors", [])
    if not isinstance(errors, list) or not all(
        isinstance(s, int) and 400 <= s <= 599 for s in errors
    ):
        raise ScriptError("errors must be a list of HTTP statuses 400-599")
    fallback = raw.get("fallback", DEFAULT_FALLBACK)
    if not isinstance(fallback, str) or not fallback:
        raise ScriptError("fallback must be a non-empty string")
    if not isinstance(raw.get("conversations", []), list):
        raise ScriptError("conversations must be a list")
    conversations = []
    for i, c in enumerate(raw.get("conversations", [])):
        where = f"conversations[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ScriptError(f"{where}: needs \"name\"")
        try:
            pattern = re.compile(c.get("match", ""))
        except (re.error, TypeError) as e:
            raise ScriptError(f"{where}: bad \"match\": {e}") from None
        turns = c.get("turns")
        if not isinstance(turns, list) or not turns:
            raise ScriptError(f"{where}: \"turns\" must be a non-empty list")
        conversations.append({
            "name": c["name"],
            "match": pattern,
            "turns": [_turn(t, f"{where}.turns[{j}]") for j, t in enumerate(turns)],
        })
    opening = raw.get("opening", [])
    if not isinstance(opening, list):
        raise ScriptError("opening must be a list of turns")
    return {
        "mode": mode,
        "delay_ms": delay_ms,
        "errors": errors,
        "error_always": bool(raw.get("error_always", False)),
        "opening": [_turn(t, f"opening[{j}]") for j, t in enumerate(opening)],
        "conversations": conversations,
        "fallback": fallback,
    }


# --------------------------------------------------- reading a request body


def text_of(content):
    """The text of a message or tool_result content: a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif "content" in block:
                parts.append(text_of(block["content"]))
    return "\n".join(parts)


_CWD = re.compile(
    r"^[ \t]*(?:-[ \t]*)?(?:Primary working directory|Working directory):[ \t]*(\S[^\n]*?)[ \t]*$",
    re.M)


def working_directory(body):
    """Claude Code states it in a role "system" message, older versions in "system"."""
    texts = [text_of(m.get("content")) for m in body.get("messages", [])
             if isinstance(m, dict) and m.get("role") == "system"]
    texts.append(text_of(body.get("system")))
    for t in texts:
        found = _CWD.search(t)
        if found:
            return found.group(1)
    return DEFAULT_CWD


def first_user_text(messages):
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def user_text(messages):
    """Everything the user side said: prompts and tool results (what a
    conversation is chosen by once the opening turns have run)."""
    return "\n".join(text_of(m.get("content")) for m in messages
                     if isinstance(m, dict) and m.get("role") == "user")


_PROMPT_FILE = re.compile(r"(/[^\s:'\"]+\.md)\b")


def prompt_file(messages):
    """The first absolute path to a .md file the first user message names."""
    found = _PROMPT_FILE.search(first_user_text(messages))
    return found.group(1) if found else "/task/prompt.md"


def last_tool_result(messages):
    for m in reversed(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for block in reversed(content):
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    return text_of(block.get("content"))
    return None


def substitute(value, cwd, prompt="/task/prompt.md"):
    if isinstance(value, str):
        return value.replace("{cwd}", cwd).replace("{prompt_file}", prompt)
    if isinstance(value, list):
        return [substitute(v, cwd, prompt) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, cwd, prompt) for k, v in value.items()}
    return value


def text_block(text):
    return [{"type": "text", "text": text}]


# ------------------------------------------------------------- the stand-in


class StandIn:
    """The script, the log and the state shared by all connections."""

    def __init__(self, script, log):
        self.script = script
        self._log = log
        self._lock = threading.Lock()
        self._messages_seen = 0
        self._ids = 0
        self.stopping = threading.Event()

    def log(self, entry):
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if not self._log.closed:
                self._log.write(line)
                self._log.flush()

    def close(self):
        with self._lock:
            self._log.close()

    def message_id(self):
        with self._lock:
            self._ids += 1
            return f"msg_standin_{self._ids:04d}"

    def error_status(self):
        """The scripted error status for this /v1/messages request, or None."""
        with self._lock:
            n = self._messages_seen
            self._messages_seen += 1
        errors = self.script["errors"]
        if self.script["mode"] != "error" or not errors:
            return None
        if self.script["error_always"]:
            return errors[n % len(errors)]
        return errors[n] if n < len(errors) else None

    def plan(self, body):
        """What to answer a /v1/messages body: (content blocks, log fields)."""
        messages = body["messages"]
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        offered = {t.get("name") for t in tools if isinstance(t, dict)}
        fields = {"conversation": None, "turn": None, "problem": None}
        if not offered:  # a side request (title, summary...): not a turn
            return text_block("ok"), fields
        turn_n = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        fields["turn"] = turn_n
        opening = self.script["opening"]
        if turn_n < len(opening):
            fields["conversation"] = "opening"
            turn = opening[turn_n]
        else:
            said = user_text(messages)
            conv = next((c for c in self.script["conversations"] if c["match"].search(said)),
                        None)
            if conv is None:
                return text_block(self.script["fallback"]), fields
            fields["conversation"] = conv["name"]
            turns = conv["turns"]
            k = turn_n - len(opening)
            if k >= len(turns):
                last = turns[-1]
                return text_block(last["text"] if not last["calls"] else "done"), fields
            turn = turns[k]
        turn = substitute(turn, working_directory(body), prompt_file(messages))
        if turn["hang"]:  # this turn is never answered
            fields["hang"] = True
            return [], fields
        if turn["expect"]:
            result = last_tool_result(messages)
            missing = [e for e in turn["expect"] if result is None or e not in result]
            if missing:
                shown = "(no tool result)" if result is None else result[:200]
                fields["problem"] = f"turn {turn_n}: tool result lacks {missing!r}"
                return text_block(f"[stand-in] unexpected tool result: {shown}"), fields
        for call in turn["calls"]:
            if call["tool"] not in offered:
                fields["problem"] = f"turn {turn_n}: tool {call['tool']} was not offered"
                return text_block(f"[stand-in] tool {call['tool']} was not offered"), fields
        blocks = text_block(turn["text"]) if turn["text"] else []
        for i, call in enumerate(turn["calls"]):
            blocks.append({"type": "tool_use", "id": f"toolu_{turn_n}_{i}",
                           "name": call["tool"], "input": call["input"]})
        return blocks, fields


def describe(blocks):
    tools = [b["name"] for b in blocks if b["type"] == "tool_use"]
    return "tool_use " + ",".join(tools) if tools else "text"


def pieces(s):
    return [s[i:i + PIECE] for i in range(0, len(s), PIECE)] or [""]


def sse_events(message, blocks):
    """The event stream of one answer: (event name, data) pairs."""
    start = dict(message, content=[], stop_reason=None, stop_sequence=None,
                 usage=dict(message["usage"], output_tokens=1))
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(b["text"])]
        else:
            first = {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in pieces(json.dumps(b["input"], ensure_ascii=False))]
        yield "content_block_start", {"type": "content_block_start", "index": i,
                                      "content_block": first}
        for d in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


# ------------------------------------------------------------------ HTTP


class BodyTooLarge(Exception):
    pass


class BadBody(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "model-stand-in"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this

    def log_message(self, *args):
        pass

    def version_string(self):
        return self.server_version

    def send_error(self, code, message=None, explain=None):
        """The standard library's answer to a malformed request: JSON, and logged."""
        self.close_connection = True
        why = message or self.responses.get(code, ("error",))[0]
        self._begin(path=getattr(self, "path", None))
        self._entry.update(answer=f"error {code}",
                           problem=f"malformed request: {why} ({self.raw_requestline[:80]!r})")
        try:
            self._send_error(code, f"stand-in: {why}")
        except OSError:
            pass

    def handle_expect_100(self):
        """No "100 Continue" for a body that will be refused anyway."""
        try:
            too_large = int(self.headers.get("Content-Length", "0")) > MAX_BODY
        except ValueError:
            too_large = False
        return True if too_large else super().handle_expect_100()

    def __getattr__(self, name):  # do_PUT, do_DELETE...: a JSON 404 and a log line
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    # -- plumbing

    @property
    def stand_in(self):
        return self.server.stand_in

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BadBody("bad chunk size") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return data
                if len(data) + size > MAX_BODY:
                    raise BodyTooLarge()
                data += self.rfile.read(size)
                self.rfile.readline(8)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BadBody("bad Content-Length") from None
        if n < 0:
            raise BadBody("bad Content-Length")
        if n > MAX_BODY:
            raise BodyTooLarge()
        data = self.rfile.read(n)
        if len(data) < n:
            raise BadBody("body shorter than Content-Length")
        return data

    def _begin(self, path):
        self._entry = {"at": int(time.time() * 1000), "method": self.command or None, "path": path,
                       "body": None, "conversation": None, "turn": None, "answer": None,
                       "problem": None}
        self._logged = False

    def _commit(self):
        """Log the request, once: when its answer is decided, before any of it is sent."""
        if not self._logged and self._entry["answer"] is not None:
            self._logged = True
            self.stand_in.log(self._entry)

    def _send(self, status, payload=None, headers=(), content_type="application/json"):
        self._commit()
        data = b"" if payload is None else (
            payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_standin")
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
            self.wfile.flush()

    def _send_error(self, status, message, headers=()):
        self._send(status, {"type": "error",
                            "error": {"type": error_type(status), "message": message},
                            "request_id": "req_standin"}, headers)

    def _client_gone(self):
        """True once the client has closed its end (what it sends is left unread)."""
        try:
            poller = select.poll()
            poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & (select.POLLHUP | select.POLLERR):
                return True
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait(self, seconds):
        """Sleep, but stop early on shutdown or when the client goes. False if it went."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self.stand_in.stopping.wait(min(left, 0.2)) or self._client_gone():
                return False

    def _write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- requests

    def _handle(self):
        self._begin(self.path)
        entry = self._entry
        try:
            self._route(entry)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # never let one request take the server down
            self.close_connection = True
            if entry["answer"] is None:
                entry["answer"] = "error 500"
                entry["problem"] = f"stand-in failure: {e!r}"
                try:
                    self._send_error(500, "stand-in failure")
                except OSError:
                    pass
        self._commit()

    def _route(self, entry):
        path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
        except BodyTooLarge:
            self.close_connection = True
            entry.update(answer="error 413", problem="request body over 16 MiB")
            return self._send_error(413, "request body over 16 MiB")
        except BadBody as e:
            self.close_connection = True
            entry.update(answer="error 400", problem=str(e))
            return self._send_error(400, str(e))
        body = None
        if raw:
            try:
                body = json.loads(raw)
                entry["body"] = body
            except ValueError as e:
                body = ValueError(str(e))

        if self.command in ("GET", "HEAD") and path in ("/", "", "/api/hello"):  # CLI preflight
            entry["answer"] = "empty"
            return self._send(200, b"", content_type="text/plain")
        if self.command == "GET" and path == "/v1/models":
            entry["answer"] = "models"
            model = {"type": "model", "id": "claude-stand-in",
                     "display_name": "Stand-in (scripted)", "created_at": "2025-01-01T00:00:00Z"}
            return self._send(200, {"data": [model], "has_more": False,
                                    "first_id": model["id"], "last_id": model["id"]})
        if self.command == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                why = ("no JSON body" if body is None else
                       f"bad JSON: {body}" if isinstance(body, ValueError) else
                       "the body needs a \"messages\" list")
                entry.update(answer="error 400", problem=why)
                return self._send_error(400, why)
            if path.endswith("count_tokens"):
                entry["answer"] = "count_tokens"
                return self._send(200, {"input_tokens": max(1, len(raw) // 4)})
            return self._messages(entry, body, len(raw))
        entry.update(answer="error 404", problem=f"no route for {self.command} {path}")
        return self._send_error(404, f"stand-in: no {self.command} {path}")

    def _messages(self, entry, body, body_size):
        stand_in = self.stand_in
        script = stand_in.script
        blocks, fields = stand_in.plan(body)
        mode = "hang" if fields.pop("hang", False) else script["mode"]
        entry.update(fields)
        status = stand_in.error_status()
        if status is not None:
            entry["answer"] = f"error {status}"
            headers = [("retry-after", "0")] if status == 429 else []
            return self._send_error(status, f"stand-in: scripted error {status}", headers)
        if mode == "hang":
            entry["answer"] = "hang"
            self._commit()
            self.close_connection = True
            while not self._client_gone() and not stand_in.stopping.wait(0.2):
                pass
            return None
        if mode == "garbage":
            entry["answer"] = "garbage"
            self._commit()
            self.close_connection = True
            streaming = body.get("stream") is True
            self.send_response(200)
            self.send_header("Content-Type",
                             "text/event-stream" if streaming else "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(GARBAGE_STREAM if streaming else GARBAGE_JSON)
            self.wfile.flush()
            return None

        content_size = len(json.dumps(blocks, ensure_ascii=False).encode())
        uses_tools = any(b["type"] == "tool_use" for b in blocks)
        message = {
            "id": stand_in.message_id(),
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or "claude-stand-in",
            "content": blocks,
            "stop_reason": "tool_use" if uses_tools else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, body_size // 4),
                      "output_tokens": max(1, content_size // 4),
                      "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }
        entry["answer"] = describe(blocks)
        if mode == "slow":
            self._commit()  # now: a test sees the request during the delay
            if not self._wait(script["delay_ms"] / 1000):
                self.close_connection = True
                return None
        if body.get("stream") is not True:
            return self._send(200, message)
        self._commit()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_standin")
        self.end_headers()
        for name, data in sse_events(message, blocks):
            data = json.dumps(data, ensure_ascii=False)
            self._write_chunk(f"event: {name}\ndata: {data}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging answer must not hold up shutdown

    def __init__(self, address, stand_in):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.stand_in = stand_in
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        pass  # a client that vanished mid-request is not our problem


# ------------------------------------------------------------------ main


def _watch_stdin(stopping):
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    stopping.set()


def main(argv=None):
    parser = argparse.ArgumentParser(description="A stand-in for the Anthropic Messages API "
                                     "that replays scripted conversations.")
    parser.add_argument("--script", required=True, help="the script (JSON)")
    parser.add_argument("--log", required=True, help="append one JSON line per request here")
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
        log = open(args.log, "a", encoding="utf-8")
    except (ScriptError, OSError) as e:
        print(f"model_stand_in: {e}", file=sys.stderr)
        return 2
    stand_in = StandIn(script, log)
    try:
        server = Server((args.host, args.port), stand_in)
    except OSError as e:
        print(f"model_stand_in: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    print(f"PORT {server.server_address[1]}", flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stand_in.stopping.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    threading.Thread(target=_watch_stdin, args=(stand_in.stopping,), daemon=True).start()
    while not stand_in.stopping.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    stand_in.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
