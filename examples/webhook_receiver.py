"""A tiny webhook receiver: verifies each event's signature, prints it, answers 204.

    pip install ./clients/python          # the SDK, for its signature check
    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 8900

Then submit jobs with `"callback_url": "http://HOST:8900/hooks/tabpfn"`. The
secret is the `webhook_secret` from `POST /auth/setup`. A request with a bad
signature or a stale timestamp gets 400 and is not printed; a duplicate
`webhook-id` (a retry or redelivery) is acknowledged and printed once only.
Standard library HTTP server: for trying things out, not for production.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tabpfn_api_client.webhooks import WebhookVerificationError, verify_webhook

MAX_BODY_BYTES = 1_000_000
_SEEN_LIMIT = 10_000


class Receiver(BaseHTTPRequestHandler):
    secret: str = ""
    seen: OrderedDict[str, None] = OrderedDict()
    seen_lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._answer(413, "too large")
            return
        body = self.rfile.read(length)
        try:
            event = verify_webhook(body, dict(self.headers.items()), self.secret)
        except WebhookVerificationError as exc:
            print(f"refused a request: {exc}", file=sys.stderr, flush=True)
            self._answer(400, str(exc))
            return
        event_id = self.headers["webhook-id"]
        with self.seen_lock:
            first_time = event_id not in self.seen
            self.seen[event_id] = None
            if len(self.seen) > _SEEN_LIMIT:
                self.seen.popitem(last=False)
        if first_time:
            data = event.get("data", {})
            error = data.get("error") or {}
            print(
                json.dumps(
                    {
                        "type": event.get("type"),
                        "job_id": data.get("job_id"),
                        "job_type": data.get("job_type"),
                        "model_id": data.get("model_id"),
                        "error_code": error.get("code"),
                        # Your labels from the submit: map the event to your records.
                        "metadata": data.get("metadata"),
                        "webhook_id": event_id,
                    }
                ),
                flush=True,
            )
        self._answer(204, "")

    def _answer(self, status: int, message: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(message.encode())))
        self.end_headers()
        if message:
            self.wfile.write(message.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per event is printed above; skip the access log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        parser.error("set WEBHOOK_SECRET to your whsec_... secret from POST /auth/setup")
    Receiver.secret = secret
    server = ThreadingHTTPServer((args.host, args.port), Receiver)
    print(f"listening on http://{args.host}:{server.server_port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
