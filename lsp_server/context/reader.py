"""Reading one workspace file into its FileSummary: what is refused (secret, outside the
workspace, huge, generated or binary) and the parse, also as the worker-process entry
point of the index's parallel build."""

from __future__ import annotations

import logging
import os
import stat

from lsp_server.context.ignore import MAX_FILE_BYTES, looks_generated
from lsp_server.context.parser import EXTENSIONS, thread_parser
from lsp_server.context.secrets import escapes_roots, is_secret_path
from lsp_server.context.symbols import FileSummary, extract

logger = logging.getLogger(__name__)

INDEXED_LANGUAGES = frozenset({"python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp"})


def language_of(path: str) -> str | None:
    lang = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    return lang if lang in INDEXED_LANGUAGES else None


def summarize(path: str, root: str, data: bytes, mtime_ns: int = 0, size: int = 0) -> FileSummary:
    """Parse ``data`` as the file at ``path`` under ``root`` (nothing is stored)."""
    language = language_of(path) or ""
    rel = path[len(root) + 1 :] if path.startswith(root + os.sep) else os.path.relpath(path, root)
    summary = FileSummary(path=path, rel=rel, root=root, language=language, mtime_ns=mtime_ns, size=size or len(data))
    parser = thread_parser(language) if language else None
    if parser is None:
        summary.error = "no grammar"
        return summary
    try:
        tree = parser.parse(data)
        summary.symbols, summary.imports, summary.package = extract(data, tree, language)
    except Exception as exc:  # a grammar bug degrades this file only
        logger.debug("extracting %s failed", path, exc_info=True)
        summary.error = f"{type(exc).__name__}: {exc}"
    return summary


def read_and_summarize(path: str, root: str) -> FileSummary | str:
    """A file's summary, or why it is not indexed ("gone", "huge", "generated-or-binary",
    "secret", "outside" (a symlink out of the workspace), "unreadable", "not-a-file")."""
    if is_secret_path(path):
        return "secret"
    # Resolve links once and open the result without following another one: a file that
    # is swapped for a symlink to /etc/shadow after the check is not read.
    real = os.path.realpath(path)
    if escapes_roots(real, [root]):
        return "outside"
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        return "unreadable"
    except OSError:
        return "gone"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "not-a-file"  # a FIFO or device named like a source file would block a read
        if st.st_size > MAX_FILE_BYTES:
            return "huge"
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        return "unreadable"
    except OSError:
        return "gone"
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        return "huge"  # it grew while we read it
    if looks_generated(data[:4096]):
        return "generated-or-binary"
    return summarize(path, root, data, st.st_mtime_ns, st.st_size)


def _summarize_batch(batch: list[tuple[str, str]]) -> list[tuple[str, FileSummary | str]]:
    """Worker-process entry point of the parallel build."""
    out: list[tuple[str, FileSummary | str]] = []
    for path, root in batch:
        try:
            out.append((path, read_and_summarize(path, root)))
        except Exception as exc:  # never lose the batch for one file
            out.append((path, f"error: {exc}"))
    return out
