"""The workspace symbol index: what each file defines and imports, and where imports lead.

One :class:`FileSummary` per source file of the workspace roots (``symbols.py`` reads
them), plus the maps retrieval needs: definition name -> files, Python dotted module ->
file, directory -> files.  Every change goes through :meth:`WorkspaceIndex.update_file` /
:meth:`remove_file`, which replace one file's entries and nothing else, so a watcher event
costs one parse.  All methods are thread-safe (one lock, held only for map updates and
lookups, never while reading or parsing a file).

Imports are resolved to workspace files where that is cheap and certain enough: Python
absolute and relative imports (packages, namespace packages, re-exports through
``__init__``), JavaScript/TypeScript relative specifiers, Go import paths (via go.mod or a
directory suffix), Rust ``crate::``/``super::``/``self::`` paths and ``mod x;``, Java
imports, and C/C++ ``#include "..."``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from lsp_server.context.ignore import IgnoreRules, skip_directory
from lsp_server.context.reader import _summarize_batch, language_of, read_and_summarize, summarize
from lsp_server.context.secrets import escapes_roots, is_secret_path
from lsp_server.context.symbols import FileSummary, Import, Symbol

logger = logging.getLogger(__name__)

MAX_FILES = 50_000  # per workspace: beyond this the rest is skipped (logged once)
MAX_SKIPPED_PATHS = 20_000  # skipped files remembered by path; beyond, only counted
PARALLEL_MIN_FILES = 200  # smaller builds parse in the calling thread
BATCH_FILES = 32
_JS_EXTS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")

_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))
ProgressCallback = Callable[[int, int, str], None]  # (done, total, path)


@dataclass(frozen=True)
class Binding:
    """What a local name of a file refers to, after import resolution.

    ``kind`` "symbol": ``name`` defined in ``paths`` (one file); "module": the local name
    is a module/package whose files are ``paths``; "wildcard": every top-level definition
    of ``paths`` is in scope (``from x import *``, ``#include``, Java ``.*``).
    """

    local: str
    kind: str
    paths: tuple[str, ...]
    name: str = ""
    line: int = 0


@dataclass
class IndexStats:
    files: int = 0
    symbols: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    build_s: float = 0.0
    state: str = "empty"  # empty, building, ready


def default_workers() -> int:
    """Processes for a full build: one core is left to the editor and the model."""
    env = os.environ.get("QUILL_INDEX_WORKERS")
    if env and env.isdigit():
        return int(env)
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class WorkspaceIndex:
    def __init__(
        self, roots: Iterable[str] = (), max_files: int = MAX_FILES, secret_paths: Sequence[str] = ()
    ) -> None:
        self._lock = threading.RLock()
        # User globs of files never indexed (quill.secretPaths), on top of secrets.SECRET_NAMES.
        self.secret_paths: tuple[str, ...] = tuple(secret_paths)
        self.roots: list[str] = []
        self._rules: dict[str, IgnoreRules] = {}
        self.files: dict[str, FileSummary] = {}
        self._defs: dict[str, set[str]] = {}  # symbol name -> paths
        self._modules: dict[str, str] = {}  # python dotted module -> path
        self._modules_by_last: dict[str, set[str]] = {}
        self._module_names: dict[str, tuple[str, ...]] = {}  # path -> its dotted names
        self._dirs: dict[str, set[str]] = {}  # directory -> paths
        self._pkg_dirs: dict[str, bool] = {}  # directory -> has __init__.py
        self._go_modules: dict[str, str] = {}  # go.mod module path -> directory
        self._skipped: dict[str, str] = {}  # path -> why it is not indexed
        self._skip_overflow: dict[str, int] = {}  # reason -> skipped paths not remembered
        self._resolved: OrderedDict[tuple[object, ...], tuple[Binding, ...]] = OrderedDict()
        self.generation = 0
        self.max_files = max_files
        self.stats = IndexStats()
        self._warned_full = False
        for root in roots:
            self.add_root(root)

    # ------------------------------------------------------------------ roots
    def add_root(self, root: str) -> None:
        root = os.path.abspath(root)
        with self._lock:
            if root not in self.roots:
                self.roots.append(root)
                self._rules[root] = IgnoreRules(root)
                self._read_go_mod(root)

    def remove_root(self, root: str) -> None:
        root = os.path.abspath(root)
        with self._lock:
            if root not in self.roots:
                return
            self.roots.remove(root)
            self._rules.pop(root, None)
            for path in [p for p in self.files if self.root_for(p) is None]:
                self._drop(path)
            self._skipped = {p: r for p, r in self._skipped.items() if self.root_for(p) is not None}
            self._skip_overflow.clear()
            self.stats.skipped = dict(Counter(self._skipped.values()))
            self._go_modules = {m: d for m, d in self._go_modules.items() if self.root_for(d + os.sep + "x")}
            self._changed()

    def root_for(self, path: str) -> str | None:
        """The deepest workspace root that contains ``path``."""
        best = None
        for root in self.roots:
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                if best is None or len(root) > len(best):
                    best = root
        return best

    def relative(self, path: str) -> str:
        root = self.root_for(path)
        return os.path.relpath(path, root) if root else os.path.basename(path)

    def _read_go_mod(self, root: str) -> None:
        try:
            with open(os.path.join(root, "go.mod"), encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("module "):
                        self._go_modules[line.split()[1].strip()] = root
                        break
        except OSError:
            pass

    # ---------------------------------------------------------------- walking
    def discover(self, root: str, cancel: threading.Event | None = None) -> list[str]:
        """Indexable files under ``root``, respecting ignore rules (nearest dirs first)."""
        rules = self._rules.get(root) or IgnoreRules(root)
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            if cancel is not None and cancel.is_set():
                break
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not skip_directory(rules, os.path.join(dirpath, d)) and not os.path.islink(os.path.join(dirpath, d))
            )
            for name in sorted(filenames):
                if language_of(name) is None:
                    continue
                path = os.path.join(dirpath, name)
                if rules.ignored(path, False):
                    continue
                if is_secret_path(path, self.secret_paths, root):
                    self._skip(path, "secret")
                    continue
                if os.path.islink(path) and escapes_roots(path, [root]):
                    self._skip(path, "outside")
                    continue
                found.append(path)
        return found

    def build(
        self,
        roots: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        first: Sequence[str] = (),
        workers: int | None = None,
    ) -> int:
        """Index every file of ``roots`` (all roots by default); returns files handled.

        Files in the directories of ``first`` (open documents) are indexed first, so
        retrieval is useful before the whole build is done.  A big build parses in
        ``workers`` separate processes (default :func:`default_workers`): tree-sitter holds
        the GIL while it parses, and in the server's own process that would stall the
        event loop and the model thread for the whole build.  ``workers=0`` parses here.
        """
        t0 = time.perf_counter()
        with self._lock:
            self.stats.state = "building"
        targets = [os.path.abspath(r) for r in (roots if roots is not None else list(self.roots))]
        paths: list[str] = []
        for root in targets:
            self.add_root(root)
            paths.extend(self.discover(root, cancel))
        if first:
            hot = {os.path.dirname(os.path.abspath(p)) for p in first}
            paths.sort(key=lambda p: os.path.dirname(p) not in hot)
        paths = self._within_limit(paths)
        total = len(paths)
        done = 0
        if workers is None:
            workers = default_workers() if total >= PARALLEL_MIN_FILES else 0
        if workers > 0 and total:
            done = self._build_in_processes(paths, workers, progress, cancel)
        for path in paths[done:]:  # in this thread: small builds, or what the pool left
            if cancel is not None and cancel.is_set():
                break
            try:
                self.update_file(path, notify=False)
            except Exception:  # one bad file never stops the build
                logger.exception("indexing %s failed", path)
            done += 1
            if progress is not None:
                progress(done, total, path)
            if done % BATCH_FILES == 0:
                with self._lock:
                    self._changed()
        with self._lock:
            self.stats.build_s = time.perf_counter() - t0
            self.stats.state = "ready" if not (cancel is not None and cancel.is_set()) else "cancelled"
            self._changed()
        logger.info("indexed %d files in %.1f s (%s)", len(self.files), self.stats.build_s, self.stats.skipped)
        return done

    def _within_limit(self, paths: list[str]) -> list[str]:
        """``paths`` cut to what the file limit leaves room for (the rest is reported as
        "limit" and never read or parsed)."""
        with self._lock:
            room = max(0, self.max_files - len(self.files))
            new = [p for p in paths if p not in self.files]
            if len(new) <= room:
                return paths
            over = set(new[room:])
            for p in new[room:]:
                self._skip(p, "limit")
            if not self._warned_full:
                logger.warning(
                    "workspace index is full (%d files, quill.indexMaxFiles); %d files are not indexed",
                    self.max_files,
                    len(over),
                )
                self._warned_full = True
        return [p for p in paths if p not in over]

    def _build_in_processes(
        self, paths: list[str], workers: int, progress: ProgressCallback | None, cancel: threading.Event | None
    ) -> int:
        """Parse ``paths`` in worker processes; returns how many were handled (in order:
        the caller indexes ``paths[done:]`` itself if the pool fails or is cancelled)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        jobs = []
        for path in paths:
            root = self.root_for(path)
            if root is not None:
                jobs.append((path, root))
        batches = [jobs[i : i + BATCH_FILES] for i in range(0, len(jobs), BATCH_FILES)]
        done = 0
        try:
            # spawn, not fork: the server process has threads (event loop, model, watcher).
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_summarize_batch, b) for b in batches]
                for future in futures:
                    if cancel is not None and cancel.is_set():
                        for f in futures:
                            f.cancel()
                        break
                    for path, result in future.result():
                        self._store(path, result)
                        done += 1
                        if progress is not None:
                            progress(done, len(paths), path)
                    with self._lock:
                        self._changed()  # retrieval sees each batch as it lands
        except Exception:
            logger.warning("parallel indexing failed; indexing in this process", exc_info=True)
        return done

    def _store(self, path: str, result: FileSummary | str) -> None:
        if isinstance(result, str):
            self.remove_file(path)
            if result != "gone":
                self._skip(path, result if not result.startswith("error") else "error")
            return
        with self._lock:
            if path not in self.files and len(self.files) >= self.max_files:
                if not self._warned_full:
                    logger.warning("workspace index is full (%d files); the rest is not indexed", self.max_files)
                    self._warned_full = True
                self._skip(path, "limit")
                return
            self._unskip(path)
            if path in self.files:
                self._drop(path)
            self._add(result)

    # ---------------------------------------------------------------- updates
    def _skip(self, path: str, reason: str) -> bool:
        """Record why ``path`` is not indexed.  Counts are kept incrementally (a workspace
        far over the file limit skips tens of thousands of paths); past
        :data:`MAX_SKIPPED_PATHS` paths only the count grows, so memory stays bounded."""
        with self._lock:
            counts = self.stats.skipped
            old = self._skipped.get(path)
            if old == reason:
                return False
            if old is not None:
                counts[old] -= 1
                if not counts[old]:
                    del counts[old]
            elif len(self._skipped) >= MAX_SKIPPED_PATHS:
                counts[reason] = counts.get(reason, 0) + 1
                self._skip_overflow[reason] = self._skip_overflow.get(reason, 0) + 1
                return False
            self._skipped[path] = reason
            counts[reason] = counts.get(reason, 0) + 1
        return False

    def _unskip(self, path: str) -> None:
        with self._lock:
            reason = self._skipped.pop(path, None)
            if reason is not None:
                counts = self.stats.skipped
                counts[reason] -= 1
                if not counts[reason]:
                    del counts[reason]

    def is_indexable(self, path: str) -> bool:
        root = self.root_for(path)
        if root is None or language_of(path) is None:
            return False
        if is_secret_path(path, self.secret_paths, root) or escapes_roots(path, [root]):
            return False
        return not self._rules[root].ignored_anywhere(path)

    def update_file(self, path: str, notify: bool = True) -> bool:
        """(Re-)index one file; True when the index changed.  A file that is gone or no
        longer indexable is removed."""
        path = os.path.abspath(path)
        if not self.is_indexable(path):
            return self.remove_file(path)
        try:
            st = os.stat(path)
        except OSError:
            return self.remove_file(path)
        old = self.files.get(path)
        if old is not None and old.mtime_ns == st.st_mtime_ns and old.size == st.st_size:
            return False
        if old is None and len(self.files) >= self.max_files:
            if not self._warned_full:
                logger.warning("workspace index is full (%d files); the rest is not indexed", self.max_files)
                self._warned_full = True
            return self._skip(path, "limit")
        root = self.root_for(path) or os.path.dirname(path)
        result = read_and_summarize(path, root)
        if isinstance(result, str):
            self.remove_file(path)
            return result != "gone" and self._skip(path, result)
        with self._lock:
            self._unskip(path)
            if path in self.files:
                self._drop(path)
            self._add(result)
            if notify:
                self._changed()
        return True

    def summarize(self, path: str, data: bytes, mtime_ns: int = 0, size: int = 0) -> FileSummary:
        """Parse ``data`` as the file at ``path`` (nothing is stored)."""
        return summarize(path, self.root_for(path) or os.path.dirname(path), data, mtime_ns, size)

    def remove_file(self, path: str) -> bool:
        path = os.path.abspath(path)
        with self._lock:
            if path not in self.files:
                return False
            self._drop(path)
            self._changed()
            return True

    def remove_tree(self, directory: str) -> int:
        prefix = os.path.abspath(directory).rstrip(os.sep) + os.sep
        with self._lock:
            gone = [p for p in self.files if p.startswith(prefix)]
            for path in gone:
                self._drop(path)
            self._pkg_dirs = {d: v for d, v in self._pkg_dirs.items() if not (d + os.sep).startswith(prefix)}
            if gone:
                self._changed()
        return len(gone)

    def refresh_path(self, path: str) -> int:
        """Bring one path from a file event up to date: a file, a directory (walked) or a
        path that is gone.  Returns the number of files that changed."""
        path = os.path.abspath(path)
        name = os.path.basename(path)
        if name == "__init__.py":
            with self._lock:
                self._pkg_dirs.pop(os.path.dirname(path), None)
        if name == ".gitignore":
            root = self.root_for(path)
            if root is not None:
                self._rules[root].forget(os.path.dirname(path))
                return self.rescan(os.path.dirname(path))
            return 0
        if os.path.isdir(path):
            return self.rescan(path)
        if not os.path.exists(path):
            with self._lock:
                if path not in self.files:
                    return self.remove_tree(path)
        return int(self.update_file(path))

    def rescan(self, directory: str) -> int:
        """Re-walk one directory: new files added, vanished or now-ignored ones removed."""
        directory = os.path.abspath(directory)
        root = self.root_for(directory)
        if root is None:
            return 0
        rules = self._rules[root]
        prefix = directory.rstrip(os.sep) + os.sep
        if directory != root and rules.ignored_anywhere(directory, True):
            return self.remove_tree(directory)
        present = set()
        changed = 0
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = [d for d in dirnames if not skip_directory(rules, os.path.join(dirpath, d))]
            for fname in filenames:
                p = os.path.join(dirpath, fname)
                if language_of(p) is None or rules.ignored(p, False):
                    continue
                present.add(p)
                changed += int(self.update_file(p))
        with self._lock:
            for p in [p for p in self.files if p.startswith(prefix) and p not in present]:
                self._drop(p)
                changed += 1
            if changed:
                self._changed()
        return changed

    def _changed(self) -> None:
        self.generation += 1
        self._resolved.clear()
        self.stats.files = len(self.files)

    def _add(self, summary: FileSummary) -> None:
        path = summary.path
        self.files[path] = summary
        self.stats.symbols += len(summary.symbols)
        for sym in summary.symbols:
            self._defs.setdefault(sym.name, set()).add(path)
        self._dirs.setdefault(os.path.dirname(path), set()).add(path)
        if summary.language == "python":
            names = self._python_module_names(path, summary.root)
            self._module_names[path] = names
            for dotted in names:
                self._modules[dotted] = path
                self._modules_by_last.setdefault(dotted.rsplit(".", 1)[-1], set()).add(dotted)

    def _drop(self, path: str) -> None:
        summary = self.files.pop(path, None)
        if summary is None:
            return
        self.stats.symbols -= len(summary.symbols)
        for sym in summary.symbols:
            paths = self._defs.get(sym.name)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self._defs[sym.name]
        d = self._dirs.get(os.path.dirname(path))
        if d is not None:
            d.discard(path)
            if not d:
                del self._dirs[os.path.dirname(path)]
        for dotted in self._module_names.pop(path, ()):
            if self._modules.get(dotted) == path:
                del self._modules[dotted]
                last = self._modules_by_last.get(dotted.rsplit(".", 1)[-1])
                if last is not None:
                    last.discard(dotted)

    # ------------------------------------------------------------ python names
    def _is_package_dir(self, directory: str) -> bool:
        known = self._pkg_dirs.get(directory)
        if known is None:
            known = self._pkg_dirs[directory] = os.path.exists(os.path.join(directory, "__init__.py"))
        return known

    def _python_module_names(self, path: str, root: str) -> tuple[str, ...]:
        """Dotted names ``path`` is importable as: from the top of its package chain
        (directories with ``__init__.py``) and from the workspace root."""
        directory, base = os.path.split(path)
        stem = base.rsplit(".", 1)[0]
        parts = [] if stem == "__init__" else [stem]
        d = directory
        while d != root and self._is_package_dir(d) and d.startswith(root):
            parts.insert(0, os.path.basename(d))
            d = os.path.dirname(d)
        names = []
        if parts:
            names.append(".".join(parts))
        rel = os.path.relpath(path, root).rsplit(".", 1)[0].split(os.sep)
        if rel[-1] == "__init__":
            rel = rel[:-1]
        if rel and all(p.isidentifier() for p in rel):
            dotted = ".".join(rel)
            if dotted not in names:
                names.append(dotted)
            if rel[0] in ("src", "lib", "python") and len(rel) > 1:
                alt = ".".join(rel[1:])
                if alt not in names:
                    names.append(alt)
        return tuple(names)

    def python_module(self, dotted: str, near: str = "") -> str | None:
        """The file of a dotted module: an exact name, else a unique suffix match."""
        with self._lock:
            path = self._modules.get(dotted)
            if path is not None:
                return path
            if "." not in dotted or dotted.split(".", 1)[0] in _STDLIB:
                return None  # `import types` is the standard library, not pkg/types.py
            last = dotted.rsplit(".", 1)[-1]
            hits = [m for m in self._modules_by_last.get(last, ()) if m.endswith("." + dotted)]
            if len(hits) == 1:
                return self._modules[hits[0]]
            if hits and near:
                root = self.root_for(near)
                same = [m for m in hits if self.root_for(self._modules[m]) == root]
                if len(same) == 1:
                    return self._modules[same[0]]
        return None

    # ---------------------------------------------------------------- lookups
    def summary(self, path: str) -> FileSummary | None:
        return self.files.get(path)

    def definitions(self, name: str) -> list[tuple[FileSummary, Symbol]]:
        """Every definition of ``name`` in the workspace (module level first)."""
        with self._lock:
            paths = sorted(self._defs.get(name, ()))
            out: list[tuple[FileSummary, Symbol]] = []
            for p in paths:
                summary = self.files.get(p)
                if summary is not None:
                    out.extend((summary, s) for s in summary.named(name))
        out.sort(key=lambda fs: (fs[1].container != "", fs[0].rel))
        return out

    def count_definitions(self, name: str) -> int:
        with self._lock:
            return len(self._defs.get(name, ()))

    def files_in(self, directory: str) -> list[str]:
        with self._lock:
            return sorted(self._dirs.get(directory, ()))

    # -------------------------------------------------------------- resolution
    def resolve(self, path: str, language: str, imports: Sequence[Import]) -> tuple[Binding, ...]:
        """What the imports of the file at ``path`` bind, in workspace files."""
        key = (path, language, tuple(imports), self.generation)
        with self._lock:
            hit = self._resolved.get(key)
            if hit is not None:
                self._resolved.move_to_end(key)
                return hit
        out: list[Binding] = []
        for imp in imports:
            try:
                out.extend(self._resolve_one(path, language, imp))
            except Exception:
                logger.debug("resolving %s in %s failed", imp, path, exc_info=True)
        result = tuple(out)
        with self._lock:
            self._resolved[key] = result
            while len(self._resolved) > 256:
                self._resolved.popitem(last=False)
        return result

    def _resolve_one(self, path: str, language: str, imp: Import) -> list[Binding]:
        if language == "python":
            return self._resolve_python(path, imp)
        if language in ("javascript", "typescript", "tsx"):
            return self._resolve_js(path, imp)
        if language == "go":
            return self._resolve_go(imp)
        if language == "rust":
            return self._resolve_rust(path, imp)
        if language == "java":
            return self._resolve_java(imp)
        if language in ("c", "cpp"):
            return self._resolve_include(path, imp)
        return []

    def _py_file_in(self, directory: str, dotted: str) -> str | None:
        base = os.path.join(directory, *dotted.split(".")) if dotted else directory
        for candidate in (base + ".py", base + ".pyi", os.path.join(base, "__init__.py")):
            if candidate in self.files:
                return candidate
        return None

    def _resolve_python(self, path: str, imp: Import) -> list[Binding]:
        out: list[Binding] = []
        if imp.level:
            directory = os.path.dirname(path)
            for _ in range(imp.level - 1):
                directory = os.path.dirname(directory)
            target = self._py_file_in(directory, imp.module)
            package_dir = os.path.join(directory, *imp.module.split(".")) if imp.module else directory
        else:
            target = self.python_module(imp.module, near=path) if imp.module else None
            package_dir = os.path.dirname(target) if target and target.endswith("__init__.py") else ""
        if not imp.names and not imp.wildcard:
            if target is not None:
                # `import a.b` binds `a`; code then reaches the target as `a.b.name`.
                top = imp.module.split(".")[0]
                explicit = imp.alias and not ("." in imp.module and imp.alias == top)
                out.append(
                    Binding(local=imp.alias if explicit else imp.module, kind="module", paths=(target,), line=imp.line)
                )
                if not explicit and top != imp.module:
                    top_file = self.python_module(top, near=path)
                    if top_file is not None:
                        out.append(Binding(local=top, kind="module", paths=(top_file,), line=imp.line))
            return out
        if imp.wildcard:
            if target is not None:
                out.append(Binding(local="*", kind="wildcard", paths=(target,), line=imp.line))
            return out
        for name, local in imp.names:
            sub = self._py_file_in(package_dir, name) if package_dir else None
            if sub is None and not imp.level and imp.module:
                sub = self.python_module(f"{imp.module}.{name}", near=path)
            if sub is not None and sub != path:
                out.append(Binding(local=local, kind="module", paths=(sub,), line=imp.line))
            elif target is not None:
                out.append(Binding(local=local, kind="symbol", paths=(target,), name=name, line=imp.line))
        return out

    def _resolve_js(self, path: str, imp: Import) -> list[Binding]:
        spec = imp.module
        if not spec.startswith("."):
            return []
        base = os.path.normpath(os.path.join(os.path.dirname(path), spec))
        stem = base
        for ext in (".js", ".jsx", ".mjs", ".cjs"):
            if base.endswith(ext):
                stem = base[: -len(ext)]
        candidates = [base] + [stem + e for e in _JS_EXTS] + [os.path.join(base, "index" + e) for e in _JS_EXTS]
        target = next((c for c in candidates if c in self.files), None)
        if target is None:
            return []
        out = []
        if imp.alias:
            out.append(Binding(local=imp.alias, kind="module", paths=(target,), line=imp.line))
        for name, local in imp.names:
            out.append(
                Binding(
                    local=local,
                    kind="symbol",
                    paths=(target,),
                    name=name if name != "default" else local,
                    line=imp.line,
                )
            )
        return out

    def _resolve_go(self, imp: Import) -> list[Binding]:
        module = imp.module
        directory = None
        for mod_path, mod_dir in self._go_modules.items():
            if module == mod_path or module.startswith(mod_path + "/"):
                directory = (
                    os.path.join(mod_dir, *module[len(mod_path) :].strip("/").split("/"))
                    if module != mod_path
                    else mod_dir
                )
                break
        if directory is None:
            parts = module.split("/")
            with self._lock:
                dirs = list(self._dirs)
            for k in range(len(parts), 0, -1):
                tail = os.sep + os.path.join(*parts[-k:])
                hits = [d for d in dirs if d.endswith(tail)]
                if len(hits) == 1:
                    directory = hits[0]
                    break
                if hits:
                    break
        if directory is None:
            return []
        files = tuple(p for p in self.files_in(directory) if p.endswith(".go") and not p.endswith("_test.go"))
        if not files:
            return []
        if imp.wildcard:
            return [Binding(local="*", kind="wildcard", paths=files, line=imp.line)]
        return [Binding(local=imp.alias, kind="module", paths=files, line=imp.line)]

    def _rust_crate_src(self, path: str) -> str | None:
        d = os.path.dirname(path)
        root = self.root_for(path) or "/"
        while True:
            if os.path.exists(os.path.join(d, "Cargo.toml")):
                return os.path.join(d, "src")
            if d == root or os.path.dirname(d) == d:
                return None
            d = os.path.dirname(d)

    def _rust_module_file(self, directory: str, parts: list[str]) -> tuple[str | None, list[str]]:
        """The file of the longest module prefix of ``parts`` under ``directory``, and the
        item names left over."""
        for k in range(len(parts), 0, -1):
            base = os.path.join(directory, *parts[:k])
            for candidate in (base + ".rs", os.path.join(base, "mod.rs")):
                if candidate in self.files:
                    return candidate, parts[k:]
        return None, parts

    def _rust_module_dir(self, path: str) -> str:
        """Directory holding the child modules of the module in ``path``."""
        base = os.path.basename(path)
        if base in ("mod.rs", "lib.rs", "main.rs"):
            return os.path.dirname(path)
        return os.path.splitext(path)[0]

    def _resolve_rust(self, path: str, imp: Import) -> list[Binding]:
        if imp.kind == "mod":
            target, _ = self._rust_module_file(self._rust_module_dir(path), [imp.module])
            return [Binding(local=imp.alias, kind="module", paths=(target,), line=imp.line)] if target else []
        parts = imp.module.split("::")
        if parts[0] == "crate":
            src = self._rust_crate_src(path)
            if src is None:
                return []
            directory, parts = src, parts[1:]
        elif parts[0] in ("self", "super"):
            directory = self._rust_module_dir(path)
            while parts and parts[0] in ("self", "super"):
                if parts[0] == "super":
                    directory = os.path.dirname(directory)
                parts = parts[1:]
        else:
            return []
        if parts:
            target, rest = self._rust_module_file(directory, parts)
        else:
            target, rest = None, []
            for candidate in (directory + ".rs", os.path.join(directory, "mod.rs"), os.path.join(directory, "lib.rs")):
                if candidate in self.files:
                    target = candidate
                    break
        if target is None:
            return []
        if imp.wildcard:
            return [Binding(local="*", kind="wildcard", paths=(target,), line=imp.line)]
        out = []
        if imp.alias and not rest:
            out.append(Binding(local=imp.alias, kind="module", paths=(target,), line=imp.line))
        for name, local in imp.names:
            sub, left = self._rust_module_file(self._rust_module_dir(target), [*rest, name]) if not rest else (None, [])
            if sub is not None and not left:
                out.append(Binding(local=local, kind="module", paths=(sub,), line=imp.line))
            else:
                out.append(Binding(local=local, kind="symbol", paths=(target,), name=name, line=imp.line))
        return out

    def _resolve_java(self, imp: Import) -> list[Binding]:
        rel = os.sep + os.path.join(*imp.module.split("."))
        if imp.wildcard:
            with self._lock:
                dirs = [d for d in self._dirs if d.endswith(rel)]
            files = tuple(p for d in dirs for p in self.files_in(d) if p.endswith(".java"))
            return [Binding(local="*", kind="wildcard", paths=files, line=imp.line)] if files else []
        out = []
        for name, local in imp.names:
            tail = rel + os.sep + name + ".java"
            with self._lock:
                hits = [p for d, ps in self._dirs.items() if d.endswith(rel) for p in ps if p.endswith(tail)]
            if hits:
                out.append(Binding(local=local, kind="symbol", paths=(sorted(hits)[0],), name=name, line=imp.line))
        return out

    def _resolve_include(self, path: str, imp: Import) -> list[Binding]:
        spec = imp.module
        candidates = [os.path.normpath(os.path.join(os.path.dirname(path), spec))]
        root = self.root_for(path)
        if root:
            candidates += [
                os.path.join(root, spec),
                os.path.join(root, "include", spec),
                os.path.join(root, "src", spec),
            ]
        target = next((c for c in candidates if c in self.files), None)
        if target is None:
            tail = os.sep + spec.replace("/", os.sep)
            with self._lock:
                hits = [p for p in self.files if p.endswith(tail)]
            if len(hits) == 1:
                target = hits[0]
        if target is None:
            return []
        return [Binding(local="*", kind="wildcard", paths=(target,), line=imp.line)]

    # ----------------------------------------------------------- definitions
    def find_definition(self, path: str, name: str, depth: int = 0) -> list[tuple[FileSummary, Symbol]]:
        """Definitions of ``name`` as seen from the module in ``path``: defined there, or
        re-exported there through its own imports (``__init__.py`` facades)."""
        summary = self.files.get(path)
        if summary is None:
            return []
        found = [(summary, s) for s in summary.named(name) if not s.container]
        if found or depth >= 3:
            return found
        for binding in self.resolve(path, summary.language, summary.imports):
            if binding.kind == "symbol" and binding.local == name:
                for target in binding.paths:
                    if target != path:
                        found.extend(self.find_definition(target, binding.name, depth + 1))
            elif binding.kind == "wildcard":
                for target in binding.paths:
                    if target != path:
                        found.extend(self.find_definition(target, name, depth + 1))
            if found:
                break
        return found
