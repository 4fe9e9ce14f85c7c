"""A hostile workspace: a 20 MB single-line file, binary and invalid-UTF-8 files with
source extensions, deeply nested code, symlink loops, a symlink out of the workspace, a
FIFO and an unreadable file named like source, files deleted/replaced while indexed, and
many small files (3,000 here, 100,000 under make stress) with quill.indexMaxFiles below
that.  Indexing finishes with the limit reported, memory stays bounded, nothing outside
is read, and completions stay responsive while it runs (latency during vs idle)."""

from __future__ import annotations

import os
import statistics
import threading
import time

import pytest

from tests.stress.harness import FIB, Server, figure, size

pytestmark = [pytest.mark.model, pytest.mark.slow]

SMALL_FILES = size(3000, 100_000)


def build(ws, outside) -> int:
    (outside / "leak.py").write_text("def LEAKED_FROM_OUTSIDE():\n    pass\n")
    (ws / "huge.py").write_bytes(b"x = '" + b"a" * 20_000_000 + b"'\n")
    (ws / "binary.py").write_bytes(bytes(range(256)) * 64)
    (ws / "badutf8.py").write_bytes(b"def ok():\n    return '\xff\xfe\xc3\x28'\n")
    (ws / "deep.py").write_text("x = " + "(" * 20_000 + ")" * 20_000 + "\n" + "".join("    " * i + "if x:\n" for i in range(400)) + "    " * 400 + "pass\n")
    (ws / "deep.rs").write_text("fn f() {" + "{" * 50_000 + "}" * 50_000 + "}\n")
    os.symlink(ws, ws / "loop")
    (ws / "a").mkdir()
    os.symlink(ws / "a", ws / "a" / "again")
    os.symlink(outside / "leak.py", ws / "link_out.py")
    os.symlink(outside, ws / "outdir")
    os.mkfifo(ws / "fifo.py")
    (ws / "locked.py").write_text("def LOCKED(): pass\n")
    os.chmod(ws / "locked.py", 0)
    (ws / ".env").write_text("SECRET=1\n")
    n = 0
    for d in range(0, SMALL_FILES, 500):
        sub = ws / f"many{d // 500}"
        sub.mkdir()
        for i in range(d, min(d + 500, SMALL_FILES)):
            (sub / f"m{i}.py").write_text(f"def small_{i}(x):\n    return x\n")
            n += 1
    return n


def test_hostile_workspace(tmp_path):
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    made = build(ws, outside)
    limit = max(100, SMALL_FILES // 2)
    s = Server(env={"QUILL_INDEX_WORKERS": "1"})
    stop = threading.Event()

    def churn() -> int:  # files deleted and replaced while the index is built
        k = 0
        while not stop.is_set() and k < 2000:
            p = ws / "many0" / f"m{k % 500}.py"
            try:
                p.unlink()
                p.write_text(f"def replaced_{k}(): pass\n")
            except OSError:
                pass
            k += 1
            time.sleep(0.005)
        return k

    try:
        s.request(0, "initialize", {"processId": None, "rootUri": f"file://{ws}", "capabilities": {},
                                    "initializationOptions": {"cacheCompletions": False, "maxTokens": 16,
                                                              "workspaceContext": False, "indexMaxFiles": limit}})
        s.response(0)
        s.notify("initialized", {})
        s.wait_ready()
        s.open(f"file://{ws}/edit.py", FIB)
        idle = [s.timed_completion(f"file://{ws}/edit.py", 3, 14)[0] for _ in range(3)]
        rss_before = s.peak_rss_mb()
        churner = threading.Thread(target=churn, daemon=True)
        t0 = time.monotonic()
        s.notify("workspace/didChangeConfiguration", {"settings": {"quill": {"workspaceContext": True, "cacheCompletions": False,
                                                                             "maxTokens": 16, "indexMaxFiles": limit}}})
        churner.start()
        during: list[float] = []
        status: dict = {}
        deadline = time.monotonic() + (1800 if SMALL_FILES > 10_000 else 300)
        while time.monotonic() < deadline:
            status = s.call("quill/workspaceIndex", {}, timeout=60)["result"]
            if status.get("state") == "ready":
                break
            if len(during) < 50:
                s.change(f"file://{ws}/edit.py", len(during) + 2, FIB + " " * (len(during) % 2))
                during.append(s.timed_completion(f"file://{ws}/edit.py", 3, 14, timeout=60)[0])
            else:
                time.sleep(0.5)
        index_s = time.monotonic() - t0
        stop.set()
        churner.join(10)
        assert status.get("state") == "ready", status
        assert s.alive()
        skipped = status.get("skipped", {})
        assert skipped.get("limit", 0) > 0 and status["files"] <= limit, status
        leak = s.call("quill/workspaceIndex", {"symbol": "LEAKED_FROM_OUTSIDE"})["result"]
        assert not leak.get("definitions"), leak
        after_ms = s.timed_completion(f"file://{ws}/edit.py", 3, 14)[0]
        figure("hostile workspace", files_made=made, limit=limit, indexed=status["files"], skipped=skipped,
               index_s=index_s, idle_ms=statistics.median(idle),
               during_ms_median=statistics.median(during) if during else 0.0,
               during_ms_max=max(during) if during else 0.0, samples_during=len(during), after_ms=after_ms,
               rss_before_mb=rss_before, peak_rss_mb=s.peak_rss_mb(), outside_leaked=bool(leak.get("definitions")))
    finally:
        stop.set()
        s.close()
