"""Exit when the editor is gone, even if nobody closes our stdin.

The client sends its ``processId`` in ``initialize``.  An editor that is killed (SIGKILL,
a crash) may leave the server's stdin open (a wrapper process, a shared pipe), and the
server would then live forever, holding the model in memory.  :class:`Lifeline` checks the
process every ``interval_s`` seconds on a daemon thread; when it is gone, the server's
shutdown hooks run (bounded in time) and the process exits.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsp_server.protocol.server import QuillServer

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
SHUTDOWN_GRACE_S = 5.0


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists (a zombie counts as gone)."""
    if pid <= 0:
        return True  # no usable id: nothing to watch
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    try:  # Linux: a zombie (killed, not yet reaped) is gone for our purposes
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
        if fields and fields[0] == b"Z":
            return False
    except OSError:
        pass
    return True


class Lifeline:
    """Watches one process id; calls ``on_gone`` once when it disappears."""

    def __init__(
        self,
        pid: int,
        on_gone: Callable[[], Any],
        interval_s: float = DEFAULT_INTERVAL_S,
        alive: Callable[[int], bool] = process_alive,
    ) -> None:
        self.pid = pid
        self._on_gone = on_gone
        self._interval = interval_s
        self._alive = alive
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="quill-lifeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._alive(self.pid):
                self.fired = True
                logger.warning("the client process %d is gone; shutting down", self.pid)
                try:
                    self._on_gone()
                except Exception:
                    logger.exception("lifeline shutdown failed")
                return


def _interval_from_env() -> float:
    raw = os.environ.get("QUILL_LIFELINE_INTERVAL_S", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if 0.05 <= value <= 3600 else DEFAULT_INTERVAL_S


def shutdown_and_exit(server: QuillServer, grace_s: float = SHUTDOWN_GRACE_S, code: int = 0) -> None:
    """Run the server's shutdown hooks and free the model, at most ``grace_s`` seconds,
    then end the process (stdin may never close, so pygls' own loop would not end)."""

    def hooks() -> None:
        for hook in list(server.on_shutdown):
            try:
                hook(server)
            except Exception:
                logger.exception("shutdown hook failed")
        try:
            server.engine.shutdown()
        except Exception:
            logger.exception("engine shutdown failed")

    worker = threading.Thread(target=hooks, name="quill-lifeline-shutdown", daemon=True)
    worker.start()
    worker.join(grace_s)
    if worker.is_alive():
        logger.warning("shutdown took over %.1f s; exiting anyway", grace_s)
    logging.shutdown()
    os._exit(code)


def register(server: QuillServer, interval_s: float | None = None) -> None:
    """Watch the client's ``processId`` from ``initialized`` on."""
    state: dict[str, Lifeline] = {}

    def on_initialized(ls: QuillServer) -> None:
        pid = getattr(ls, "process_id", None)
        if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
            return
        if not process_alive(pid):
            logger.warning("the client's processId %d does not exist; not watching it", pid)
            return
        lifeline = Lifeline(pid, lambda: shutdown_and_exit(ls), interval_s or _interval_from_env())
        state["lifeline"] = lifeline
        lifeline.start()
        logger.info("watching the client process %d", pid)

    def on_shutdown(ls: QuillServer) -> None:
        lifeline = state.pop("lifeline", None)
        if lifeline is not None:
            lifeline.stop()

    server.on_initialized.append(on_initialized)
    server.on_shutdown.append(on_shutdown)
