"""What must never reach a prompt: secret files, secrets inside code, paths outside the workspace.

Three checks, all pure functions (no LSP, no IO beyond ``os.path.realpath``):

- :func:`is_secret_path` -- files that hold credentials by their nature (``.env*``, private
  keys, ``*.pem``, ``id_rsa*``, ``.netrc``, credential stores, anything under ``.ssh/`` ...)
  plus the user's ``quill.secretPaths`` globs.  The index never reads them and retrieval
  never shows them, not even when they are open in the editor.
- :func:`mask_secrets` -- likely secrets inside text that is about to leave the machine
  (the openai backend calls it on every prompt and every text it asks the server to
  tokenize): API keys and tokens of well-known shapes, private key blocks, credentials in
  URLs, and the values of ``password = "..."``-style assignments become ``<redacted>``.
- :func:`escapes_roots` -- a path (a symlink, typically) whose real location is outside
  every workspace root: the index does not read it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence

MASK = "<redacted>"

# Data formats: ``secrets.yaml`` is a secret store, ``secrets.py`` is code.
_DATA_EXTS = ("json", "yaml", "yml", "toml", "ini", "cfg", "conf", "xml", "properties", "txt", "env")
# Matched against the file name (case-insensitive).
SECRET_NAMES: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.asc",
    "*.gpg",
    "*.ppk",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    ".htpasswd",
    ".dockercfg",
    "credentials",
    "*credentials*.json",
    "service-account*.json",
    *(f"{stem}.{ext}" for stem in ("credentials", "secrets", "secret") for ext in _DATA_EXTS),
    "*.secret",
    "*.secrets",
    "*.tfvars",
    "*.tfstate",
    "*.tfstate.*",
    "keyring*",
    "*.keychain*",
)
# A path with one of these directories in it is secret as a whole.
SECRET_DIRS = frozenset({".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".password-store", ".secrets"})


def _norm_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    return tuple(p.strip().replace("\\", "/") for p in patterns if p and p.strip())


def is_secret_path(path: str, extra: Sequence[str] = (), root: str | None = None) -> bool:
    """True for a file that may hold credentials.

    ``extra``: user globs (``quill.secretPaths``).  A glob without ``/`` matches the file
    name or any directory name; one with ``/`` matches the path relative to ``root`` (or
    the whole path), ``*`` crossing directories, a leading ``/`` anchoring it to the root.
    """
    norm = path.replace("\\", "/")
    parts = [p for p in norm.split("/") if p]
    if not parts:
        return False
    name = parts[-1].lower()
    if any(fnmatch.fnmatchcase(name, pat) for pat in SECRET_NAMES):
        return True
    if any(p.lower() in SECRET_DIRS for p in parts[:-1]):
        return True
    pats = _norm_patterns(extra)
    if not pats:
        return False
    rel = norm
    if root:
        r = root.replace("\\", "/").rstrip("/") + "/"
        if norm.startswith(r):
            rel = norm[len(r) :]
    rel = rel.lstrip("/")
    for pat in pats:
        if "/" not in pat.rstrip("/"):
            bare = pat.rstrip("/")
            if any(fnmatch.fnmatchcase(p, bare) for p in parts):
                return True
        else:
            anchored = pat.lstrip("/").rstrip("/")
            if fnmatch.fnmatchcase(rel, anchored) or fnmatch.fnmatchcase(rel, anchored + "/*"):
                return True
            if not pat.startswith("/") and (fnmatch.fnmatchcase(rel, "*/" + anchored) or fnmatch.fnmatchcase(rel, "*/" + anchored + "/*")):
                return True
    return False


def escapes_roots(path: str, roots: Iterable[str]) -> bool:
    """True when ``path``'s real location (symlinks resolved) is inside none of ``roots``."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return True
    for root in roots:
        try:
            real_root = os.path.realpath(root)
        except (OSError, ValueError):
            continue
        if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
            return False
    return True


# ---------------------------------------------------------------------- masking
# Tokens with a recognisable shape: masked wherever they appear.
_TOKEN_PATTERNS: tuple[str, ...] = (
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
    r"\bglpat-[A-Za-z0-9_\-]{20,}\b",  # GitLab
    r"\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_\-]{20,}\b",  # OpenAI / Anthropic style
    r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\b",  # Stripe
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}\b",  # Slack
    r"\bAIza[0-9A-Za-z_\-]{35}\b",  # Google API keys
    r"\bya29\.[0-9A-Za-z_\-]{20,}\b",  # Google OAuth access tokens
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}\b",
    r"\bSG\.[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]{20,}\b",  # SendGrid
    r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
)
_TOKENS = re.compile("|".join(f"(?:{p})" for p in _TOKEN_PATTERNS))

# user:password@ in a URL: the password is masked, the rest kept.
_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]+:)([^\s@/'\"]+)(@)")

# `Authorization: Bearer xyz` / `Basic xyz`.
_AUTH_HEADER = re.compile(r"(\b(?:Bearer|Basic|Token)\s+)([A-Za-z0-9._~+/\-]{12,}=*)")

_SECRET_WORD = (
    r"(?:password|passwd|passphrase|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key"
    r"|client[_\-]?secret|auth[_\-]?token|credentials?|bearer)"
)
# NAME = "value", NAME: 'value', "name": "value", name := "value", NAME="value" (env files).
_ASSIGNMENT = re.compile(
    r"(?P<head>\b[\w.\-]*" + _SECRET_WORD + r"[\w.\-]*[\"']?\s*(?::\s*[\w\[\]., |]+?\s*(?==))?"
    r"(?::=|=>|==|[:=])\s*(?:[rbuf]{0,2})?)"
    r"(?P<q>[\"'`])(?P<value>[^\"'`\n]{4,})(?P=q)",
    re.IGNORECASE,
)
# Unquoted, as in .env / shell / YAML: PASSWORD=hunter22, api_key: abcd1234.
_BARE_ASSIGNMENT = re.compile(
    r"(?P<head>^[ \t]*(?:export[ \t]+)?[\w.\-]*" + _SECRET_WORD + r"[\w.\-]*[ \t]*[:=][ \t]*)"
    r"(?P<value>[^\s\"'`#][^\s#]{3,})[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
# Values that are clearly not secrets: placeholders, reads from the environment, names.
_HARMLESS_VALUE = re.compile(
    r"^(?:<redacted>|\*+|x+|changeme|password|secret|token|none|null|true|false|todo|example|your[_\- ].*|\$\{?\w+\}?"
    r"|os\.environ.*|process\.env.*|env\(.*|getenv\(.*)$",
    re.IGNORECASE,
)


_CODE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def _assignment(match: re.Match[str]) -> str:
    value = match.group("value")
    if _HARMLESS_VALUE.match(value.strip()):
        return match.group(0)
    q = match.group("q")
    return f"{match.group('head')}{q}{MASK}{q}"


def _bare_assignment(match: re.Match[str]) -> str:
    value = match.group("value")
    if _HARMLESS_VALUE.match(value) or "(" in value or value.endswith((",", ";", ":", "{", "[")):
        return match.group(0)  # code (a call, a dict literal), not a literal secret
    if _CODE_NAME.match(value) and not (any(c.isdigit() for c in value) and "." not in value):
        return match.group(0)  # `password = user_input`, `key = settings.API_KEY`: names, not secrets
    return f"{match.group('head')}{MASK}"


def mask_secrets(text: str) -> str:
    """``text`` with likely secrets replaced by ``<redacted>`` (idempotent)."""
    if not text:
        return text
    out = _TOKENS.sub(MASK, text)
    out = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + m.group(3), out)
    out = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, out)
    out = _ASSIGNMENT.sub(_assignment, out)
    out = _BARE_ASSIGNMENT.sub(_bare_assignment, out)
    return out
