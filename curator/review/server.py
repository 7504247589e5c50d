"""The FiftyOne App's server as `curator review` runs it: FiftyOne's own server, with one change to its page.

A fresh App greets a reviewer with an "Explore Enterprise" pop-up over the
grid. FiftyOne shows it while the browser's storage for the App's address
lacks the key `fiftyone-enterprise-tooltip-seen`, and has no setting to turn
it off. So the App's HTML page gets a one-line script that sets the key when
it is absent (a key the person set, or the pop-up's own "Dismiss", is left
as it is). Everything else is FiftyOne's `fiftyone/server/main.py`: run as

    python -m curator.review.server --port 5151 --address 127.0.0.1

by `app.launch`, under FiftyOne's service wrapper (it stops the server when
curator dies). This module imports nothing of curator: it runs in the
server's own process.
"""

from __future__ import annotations

import argparse
import os

SEEN_KEY = "fiftyone-enterprise-tooltip-seen"  # the App's own key (FiftyOne 1.x, index.module-*.js)
SCRIPT = (f'<script>try{{localStorage.getItem("{SEEN_KEY}")===null&&'
          f'localStorage.setItem("{SEEN_KEY}","true")}}catch(e){{}}</script>').encode()


def mark_pop_up_seen(html: bytes) -> bytes:
    """The page with the script first in its <head>; anything else unchanged."""
    i = html.find(b"<head>")
    return html if i < 0 else html[: i + 6] + SCRIPT + html[i + 6:]


class PopUpSeen:
    """ASGI middleware: HTML responses (the App's page) pass through `mark_pop_up_seen`; the rest untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = None
        body: list[bytes] = []

        async def send_marked(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                if headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers:
                    start = message  # held until the whole page is in
                    return
                return await send(message)
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = mark_pop_up_seen(b"".join(body))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": headers + [(b"content-length", str(len(page)).encode())]})
            await send({"type": "http.response.body", "body": page})

        return await self.app(scope, receive, send_marked)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()
    # What fiftyone/server/main.py does before importing FiftyOne, so the server is set up as FiftyOne's own.
    os.environ.pop("FIFTYONE_DISABLE_SERVICES", None)
    os.environ["FIFTYONE_SERVER"] = "1"
    import fiftyone.server.main as fo_server

    fo_server.app = PopUpSeen(fo_server.app)  # start_server serves the module's `app`
    fo_server.start_server(port=args.port, address=args.address)


if __name__ == "__main__":
    main()
