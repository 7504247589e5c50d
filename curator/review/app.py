"""The FiftyOne App: its server started and stopped, watched while a person tags, and the tags pulled at its end.

`serve` runs the App until Ctrl-C (SIGTERM, SIGHUP) or a timeout, copies
changed tags into the table every few seconds meanwhile (review.tags), and
pulls them once more after the server has stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import time
from typing import Callable, Iterator
from urllib.parse import quote

from .db import ReviewError, one_line, quiet
from .tags import pull_tags, read_tags
from ..workspace import Workspace, WorkspaceError, WorkspaceLocked

PULL_WAIT_S = 30.0  # how long the pull at the App's exit waits for another command's lock
PULL_EVERY_S = 5.0  # while the App runs, changed tags reach the table this often


def check_port(address: str, port: int) -> None:
    """Refuse a port something already listens on, before FiftyOne would attach to (or hang on) it."""
    if not 1 <= port <= 65535:
        raise ReviewError(f"--port {port} is not a TCP port (1-65535)")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ReviewError(f"--address {address}: cannot resolve it ({e.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a socket of a just-closed App in TIME_WAIT is not "in use", a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ReviewError(f"port {port} on {address} is already in use (another App or program); "
                                  "choose another with --port") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ReviewError(f"--address {address} is not an address of this machine") from None
            raise ReviewError(f"cannot listen on {address}:{port}: {e.strerror}") from None


def app_url(address: str, port: int, name: str, view: str | None = None) -> str:
    host = socket.gethostname() if address in ("0.0.0.0", "::") else address  # what another machine would type
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/datasets/{quote(name)}" + (f"?view={quote(view)}" if view else "")


def is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return all(ipaddress.ip_address(sa[0].split("%")[0]).is_loopback
                   for _, _, _, _, sa in socket.getaddrinfo(address, None))
    except (socket.gaierror, OSError, ValueError):
        return False


def opening_view(dataset) -> str | None:
    """The saved view the App opens on: the selection's, when the dataset has selected faces; else every face."""
    import fiftyone.core.utils as fou

    if "selected" in dataset.list_saved_views() and len(dataset.load_saved_view("selected")):
        return fou.to_slug("selected")
    return None


def do_not_track() -> bool:
    """FiftyOne's usage analytics (and the App's consent bar asking for them) stay off in an offline curation
    tool, unless the person set `do_not_track` themselves, in the environment or their FiftyOne config file."""
    import json

    import fiftyone as fo
    from fiftyone.core.config import locate_config

    if "FIFTYONE_DO_NOT_TRACK" in os.environ:
        return fo.config.do_not_track
    try:
        with open(locate_config()) as f:
            if "do_not_track" in json.load(f):
                return fo.config.do_not_track
    except (OSError, ValueError, TypeError):
        pass  # no config file, or one FiftyOne itself would refuse: not the person's choice
    return True


def launch(dataset, *, port: int, address: str = "127.0.0.1"):
    """Start the App's web server on address:port; returns (server, url of `dataset`). Stop it with `close_app`.

    FiftyOne's own server process (curator.review.server: FiftyOne's server
    with its "Explore Enterprise" pop-up marked seen), without a Python
    `Session`: the browser needs none, and a session's background thread
    prints reconnection notices on our stdout when the machine is slow (and
    warnings about its own removed config options). The server runs under
    FiftyOne's service wrapper, which stops it when this process dies, even
    by kill -9. The URL opens the selection's saved view.
    """
    check_port(address, port)
    try:
        with quiet():
            server = _server_service()(port, address=address, do_not_track=do_not_track())
    except Exception as e:  # noqa: BLE001 - ServiceListenTimeout and friends
        raise ReviewError(f"the FiftyOne App could not start on {address}:{port} ({type(e).__name__}: {one_line(e)})") from None
    return server, app_url(address, port, dataset.name, opening_view(dataset))


def _server_service():
    """FiftyOne's ServerService running curator.review.server instead of FiftyOne's server/main.py."""
    from fiftyone.core.service import ServerService

    class Server(ServerService):
        @property
        def command(self):
            return [sys.executable, "-m", "curator.review.server", "--port", str(self.port),
                    "--address", self.address or "127.0.0.1"]

    return Server


def close_app(server) -> None:
    """Stop the App's server and wait until its processes are gone."""
    with quiet():
        server.stop()


def _serving(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the review like Ctrl-C: the App stops and tags are pulled."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def serve(ws: Workspace, dataset, *, port: int, address: str, timeout: float | None,
          on_ready: Callable[[str], None], on_note: Callable[[str], None] = lambda note: None) -> dict:
    """Run the App until Ctrl-C (or `timeout` seconds), then stop it and pull the tags; returns the pull summary.

    While it runs, tags are copied into the table every few seconds when they
    changed, so an export started after the browser is closed has them even if
    the review is still running.
    """
    server, url = launch(dataset, port=port, address=address)
    stopped = None
    ended = False
    try:
        with _interrupt_on_signals():
            try:
                on_ready(url)
                _watch(ws, dataset, address, port, timeout, on_note)
            except _ServerGone:
                stopped = "the App's server stopped by itself"
            except KeyboardInterrupt:
                pass
        ended = True
    finally:
        # Stopping the server takes seconds; a second, impatient Ctrl-C must not skip the pull.
        with _shielded():
            if ended:
                on_note("stopping the App, then copying the tags into the workspace table")
            close_app(server)
            if ended:
                pulled = _pull_or_explain(ws, dataset)
            else:
                try:  # an error is on its way up: copy what we can, but do not hide the error
                    pull_tags(ws, dataset)
                except Exception:  # noqa: BLE001 - the tags stay in the dataset for `--pull`
                    pass
    pulled["url"] = url
    if stopped:
        pulled["notes"].append(stopped)
    return pulled


class _ServerGone(Exception):
    pass


def _watch(ws: Workspace, dataset, address: str, port: int, timeout: float | None,
           on_note: Callable[[str], None]) -> None:
    """Until the timeout (or Ctrl-C): pull changed tags every few seconds; raise _ServerGone if the App dies."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    next_check = next_pull = start
    last_tags = None
    every = PULL_EVERY_S
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2)
        now_ = time.monotonic()
        if now_ >= next_check:
            next_check = now_ + 5
            if not _serving(address, port):
                raise _ServerGone
        if every is not None and now_ >= next_pull:
            try:
                tags = read_tags(ws, dataset)
                if tags != last_tags:
                    pull_tags(ws, dataset, tags=tags)
                    last_tags = tags
            except WorkspaceLocked:
                pass  # another command is writing: next round
            except ReviewError as e:
                on_note(f"{e}; tags are no longer copied while the App runs")
                every = None
                continue
            # A large dataset takes longer to read: never spend more than a tenth of the time on it.
            every = max(PULL_EVERY_S, 10 * (time.monotonic() - now_))
            next_pull = time.monotonic() + every


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to shield from
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _pull_or_explain(ws: Workspace, dataset) -> dict:
    try:
        return pull_tags(ws, dataset, wait_s=PULL_WAIT_S)
    except WorkspaceError as e:
        raise ReviewError(f"the App's tags are safe in dataset {dataset.name!r} but could not be copied into the "
                          f"table ({e}); run `curator review -w {ws.root} --pull`") from None
