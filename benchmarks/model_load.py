#!/usr/bin/env python3
"""What reading the model into memory costs compared with memory-mapping it.

Quill loads a model that fits in memory with ``use_mmap=False`` (backends/llama_cpp.py
``plan_memory``): a mapped file that is truncated while the server runs kills it with
SIGBUS.  This prints, per mode, the median load time of ``--reps`` loads (each in a fresh
process, the file in the page cache) and the process's resident memory after one short
evaluation: total RSS and its anonymous part (memory the kernel cannot drop or share).

    python benchmarks/model_load.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import llama_cpp
from lsp_server.backends.decoding import silence_llama_logs
silence_llama_logs(llama_cpp)
path, mmap = sys.argv[1], sys.argv[2] == "1"
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_batch=512, n_threads=1, verbose=False, use_mmap=mmap)
ms = (time.perf_counter() - t0) * 1000
llm.eval(llm.tokenize(b"def fibonacci(n):\n    return"))
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kb = lambda k: int(status[k].split()[0]) // 1024
print(json.dumps({"load_ms": ms, "rss_mb": kb("VmRSS"), "anon_mb": kb("RssAnon"), "file_mb": kb("RssFile")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="manifest id or .gguf path")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from lsp_server.registry import resolve_model

    path = resolve_model(args.model).path
    print(f"model: {path}")
    print(f"{'mode':<18} {'load ms (median)':>17} {'RSS MB':>7} {'anon MB':>8} {'file MB':>8}")
    for mmap, label in ((True, "mmap (llama.cpp)"), (False, "read (Quill)")):
        runs = []
        for _ in range(max(1, args.reps)):
            out = subprocess.run([sys.executable, "-c", CHILD, path, "1" if mmap else "0"],
                                 capture_output=True, text=True, check=True, timeout=300)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        last = runs[-1]
        load = statistics.median(r["load_ms"] for r in runs)
        print(f"{label:<18} {load:>17.0f} {last['rss_mb']:>7} {last['anon_mb']:>8} {last['file_mb']:>8}")


if __name__ == "__main__":
    main()
