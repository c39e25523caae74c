"""A local OpenAI-compatible chat endpoint with scripted replies, for driving the agent loop in tests.

Each POST /v1/chat/completions takes the next item of the script: a string is the assistant's reply
(with usage 100 prompt + 20 completion tokens); an int is an HTTP error status (with a short
Retry-After so the client's backoff stays fast). Requests are kept for assertions.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMPT_TOKENS, COMPLETION_TOKENS = 100, 20


class FakeOpenAI:
    def __init__(self, script: list[str | int]):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                item = server.script.pop(0) if server.script else 503
                if isinstance(item, int):
                    payload = json.dumps({"error": {"message": f"scripted {item}", "type": "server_error"}})
                    self._send(item, payload, {"retry-after-ms": "10"})
                    return
                self._send(
                    200,
                    json.dumps(
                        {
                            "id": f"chatcmpl-{len(server.requests)}",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": item}}
                            ],
                            "usage": {
                                "prompt_tokens": PROMPT_TOKENS,
                                "completion_tokens": COMPLETION_TOKENS,
                                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                            },
                        }
                    ),
                )

            def _send(self, status: int, payload: str, headers: dict | None = None) -> None:
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
