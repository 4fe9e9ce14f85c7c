#!/usr/bin/env python3
"""Workspace indexing: throughput, memory, and the cost of one changed file.

Copies the standard library ``Lib/`` of the running CPython (about 2,000 .py files;
``site-packages`` and caches left out) into a temporary workspace, then measures:

1. in this process: a full ``WorkspaceIndex.build()`` (files/s, symbols), the RSS it
   adds, and re-indexing single changed files (``update_file``, median and max over
   several files of different sizes);
2. live: the time from writing a changed file to the index showing it, through the
   watchdog watcher (what an editor save costs);
3. through the real server (``python -m lsp_server`` over stdio, as an editor starts it):
   the time from ``initialized`` to the index being ready (``quill/workspaceIndex``), and
   the server process's peak RSS (VmHWM, model included) with the index built.

    python benchmarks/indexing.py [--source DIR] [--no-server] [--changes N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lsp_server.context.index import WorkspaceIndex, default_workers  # noqa: E402
from lsp_server.context.watcher import IndexUpdater, WorkspaceWatcher  # noqa: E402


def rss_kb(pid: int | str = "self", field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def copy_stdlib(source: Path, dest: Path) -> int:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {"site-packages", "__pycache__", "dist-packages"}
        return {n for n in names if n in skip or n.startswith("config-") or n.endswith((".pyc", ".so"))}

    shutil.copytree(source, dest, ignore=ignore, symlinks=True)
    return sum(1 for _ in dest.rglob("*.py"))


def cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure_in_process(ws: Path, changes: int, workers: int | None) -> dict[str, float]:
    rss0 = rss_kb()
    index = WorkspaceIndex([str(ws)])
    t0 = time.perf_counter()
    c0 = cpu_s()
    index.build(workers=workers)
    build_s = time.perf_counter() - t0
    build_cpu = cpu_s() - c0
    rss1 = rss_kb()
    files = len(index.files)
    out = {
        "files": files,
        "symbols": index.stats.symbols,
        "skipped": sum(index.stats.skipped.values()),
        "build_s": build_s,
        "files_per_s": files / build_s,
        "build_cpu_s": build_cpu,
        "files_per_cpu_s": files / max(1e-9, build_cpu),
        "workers": workers if workers is not None else default_workers(),
        "index_rss_mb": (rss1 - rss0) / 1024,
        "process_peak_rss_mb": rss_kb(field="VmHWM") / 1024,
    }
    # Re-index single changed files: small, typical and large ones.
    summaries = sorted(index.files.values(), key=lambda s: s.size)
    picks = [summaries[int(q * (len(summaries) - 1))] for q in [i / max(1, changes - 1) for i in range(changes)]]
    times = []
    cpu_times = []
    for k, summary in enumerate(picks):
        path = Path(summary.path)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"\n\ndef _bench_added_{k}(x):\n    return x\n")
        t = time.perf_counter()
        c = time.process_time()
        changed = index.update_file(str(path))
        times.append((time.perf_counter() - t) * 1000)
        cpu_times.append((time.process_time() - c) * 1000)
        assert changed and index.definitions(f"_bench_added_{k}"), path
    out["reindex_median_ms"] = statistics.median(times)
    out["reindex_median_cpu_ms"] = statistics.median(cpu_times)
    out["reindex_max_ms"] = max(times)
    largest = picks[-1]
    out["reindex_largest_file_kb"] = largest.size / 1024
    out["reindex_largest_ms"] = times[-1]

    # Through the watcher: write a file, wait until the index has it.
    updater = IndexUpdater(index)
    updater.start()
    watcher = WorkspaceWatcher(updater)
    latencies = []
    if watcher.start(index.roots):
        time.sleep(0.5)
        for k, summary in enumerate(picks[: max(3, changes // 2)]):
            name = f"_bench_watched_{k}"
            with Path(summary.path).open("a", encoding="utf-8") as fh:
                fh.write(f"\n\ndef {name}(x):\n    return x\n")
            t = time.perf_counter()
            while not index.definitions(name):
                if time.perf_counter() - t > 10:
                    break
                time.sleep(0.002)
            latencies.append((time.perf_counter() - t) * 1000)
        watcher.stop()
    updater.stop()
    if latencies:
        out["watched_change_median_ms"] = statistics.median(latencies)
        out["watched_change_max_ms"] = max(latencies)
    return out


async def measure_server(ws: Path) -> dict[str, float]:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("quill-indexing-bench", "0.1")

    @client.feature("quill/modelState")
    def _state(params: object) -> None:
        pass

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:
        pass

    await client.start_io(sys.executable, "-m", "lsp_server", "--log-level", "warning")
    pid = client._server.pid if client._server is not None else None
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=ws.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name=ws.name)],
        )
    )
    rss_before = rss_kb(pid) if pid else 0
    t0 = time.perf_counter()
    client.initialized(types.InitializedParams())
    status = None
    while time.perf_counter() - t0 < 600:
        status = await client.protocol.send_request_async("quill/workspaceIndex", {})
        if getattr(status, "state", None) == "ready":
            break
        await asyncio.sleep(0.05)
    ready_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)  # let the model load settle too
    peak = rss_kb(pid, "VmHWM") if pid else 0
    rss = rss_kb(pid) if pid else 0
    try:
        await asyncio.wait_for(client.shutdown_async(None), 30)
        client.exit(None)
    except Exception:
        pass
    await client.stop()
    return {
        "server_files": float(getattr(status, "files", 0) or 0),
        "server_index_ready_s": ready_s,
        "server_files_per_s": (getattr(status, "files", 0) or 0) / ready_s,
        "server_rss_after_initialize_mb": rss_before / 1024,
        "server_rss_mb": rss / 1024,
        "server_peak_rss_mb": peak / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=sysconfig.get_paths()["stdlib"], help="directory to copy and index")
    ap.add_argument("--no-server", action="store_true", help="skip the real-server measurement")
    ap.add_argument("--changes", type=int, default=9, help="changed files to re-index")
    ap.add_argument(
        "--workers", type=int, default=None, help="parser processes (default: the server's; 0 = in-process)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="quill-index-bench-") as tmp:
        ws = Path(tmp) / "Lib"
        n = copy_stdlib(Path(args.source), ws)
        print(f"workspace: copy of {args.source} ({n} .py files)")
        r = measure_in_process(ws, args.changes, args.workers)
        print(
            f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times include waiting for CPU)"
        )
        print(
            f"build ({r['workers']} parser process(es)): {r['files']} files indexed ({r['skipped']} skipped: "
            f"generated/binary/huge), {r['symbols']} symbols in {r['build_s']:.2f} s = {r['files_per_s']:.0f} files/s "
            f"wall; {r['build_cpu_s']:.1f} CPU-s = {r['files_per_cpu_s']:.0f} files per CPU-second"
        )
        print(f"  index memory: +{r['index_rss_mb']:.0f} MB RSS (process peak {r['process_peak_rss_mb']:.0f} MB)")
        print(
            f"  re-index one changed file: median {r['reindex_median_ms']:.1f} ms "
            f"({r['reindex_median_cpu_ms']:.1f} ms CPU), max {r['reindex_max_ms']:.1f} ms "
            f"(largest file {r['reindex_largest_file_kb']:.0f} KB: {r['reindex_largest_ms']:.1f} ms)"
        )
        if "watched_change_median_ms" in r:
            print(
                f"  file saved -> visible in the index (watchdog): median {r['watched_change_median_ms']:.0f} ms, "
                f"max {r['watched_change_max_ms']:.0f} ms"
            )
        if not args.no_server:
            # A fresh copy: the in-process run appended functions to some files.
            ws2 = Path(tmp) / "Lib2"
            copy_stdlib(Path(args.source), ws2)
            s = asyncio.run(measure_server(ws2))
            print(
                f"real server: index of {s['server_files']:.0f} files ready {s['server_index_ready_s']:.2f} s after "
                f"initialized ({s['server_files_per_s']:.0f} files/s, model loading alongside)"
            )
            print(
                f"  server RSS {s['server_rss_mb']:.0f} MB, peak {s['server_peak_rss_mb']:.0f} MB "
                f"(after initialize, before indexing and the model: {s['server_rss_after_initialize_mb']:.0f} MB)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
