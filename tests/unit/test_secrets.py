"""context/secrets.py: secret files, masking, symlinks out of the workspace."""

from __future__ import annotations

import os

import pytest

from lsp_server.context.index import WorkspaceIndex
from lsp_server.context.secrets import MASK, escapes_roots, is_secret_path, mask_secrets


@pytest.mark.parametrize(
    "path",
    ["/w/.env", "/w/.env.local", "/w/app/prod.env", "/w/keys/server.pem", "/w/tls.key", "/home/u/.ssh/config",
     "/w/id_rsa", "/w/id_ed25519.pub", "/w/.netrc", "/w/.git-credentials", "/w/secrets.yaml", "/w/.aws/credentials",
     "/w/credentials.json", "/w/prod.tfvars", "/w/.npmrc", "/w/.pypirc"],
)
def test_secret_files(path):
    assert is_secret_path(path)


@pytest.mark.parametrize("path", ["/w/src/main.py", "/w/environment.py", "/w/secrets.py", "/w/credentials.py", "/w/keys.py", "/w/envs/a.py"])
def test_source_files_are_not_secret(path):
    assert not is_secret_path(path)


def test_user_globs():
    assert is_secret_path("/w/conf/prod/db.py", ["conf/prod/*"], "/w")
    assert is_secret_path("/w/a/private/x.py", ["private"], "/w")
    assert is_secret_path("/w/a/x_secret.py", ["*_secret.py"], "/w")
    assert not is_secret_path("/w/a/x.py", ["private", "/conf/*"], "/w")
    assert is_secret_path("/w/conf/a.py", ["/conf/*"], "/w")
    assert not is_secret_path("/w/sub/conf/a.py", ["/conf/*"], "/w")


@pytest.mark.parametrize(
    "text, secret",
    [
        ('password = "hunter22"', "hunter22"),
        ('password: str = "hunter22"', "hunter22"),
        ("DB_PASSWORD=hunter22", "hunter22"),
        ('{"api_key": "abcd1234efgh"}', "abcd1234efgh"),
        ('url = "postgres://bob:s3cr3tpw@db:5432/x"', "s3cr3tpw"),
        ('client = OpenAI(api_key="sk-abcdefghijklmnopqrstuvwxyz123456")', "sk-abcdefghijklmnopqrstuvwxyz123456"),
        ('AWS = "AKIAABCDEFGHIJKLMNOP"', "AKIAABCDEFGHIJKLMNOP"),
        ('h = {"Authorization": "Bearer abcdefghijklmnop123"}', "abcdefghijklmnop123"),
        ('gh = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"', "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("k = 'xoxb-1234567890-abcdefghij'", "xoxb-1234567890-abcdefghij"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA"),
        ("jwt = eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNryP4J3jVmNHl0w5N"),
    ],
)
def test_masked(text, secret):
    out = mask_secrets(text)
    assert secret not in out and MASK in out
    assert mask_secrets(out) == out  # idempotent


@pytest.mark.parametrize(
    "text",
    ["password = user_input", "key = settings.API_KEY", 'API_KEY = os.environ["API_KEY"]', "token = get_token()",
     'password = ""', "def check_password(pw):\n    return pw", "x = 1\nname = 'Ada'", 'password = "changeme"'],
)
def test_code_is_left_alone(text):
    assert mask_secrets(text) == text


def test_symlink_escape(tmp_path):
    ws, out = tmp_path / "ws", tmp_path / "out"
    ws.mkdir()
    out.mkdir()
    (out / "leak.py").write_text("def LEAKED_OUTSIDE(): pass\n")
    (ws / "inside.py").write_text("def INSIDE(): pass\n")
    os.symlink(out / "leak.py", ws / "link.py")
    os.symlink(ws / "inside.py", ws / "alias.py")
    os.symlink(out, ws / "extdir")
    assert escapes_roots(str(ws / "link.py"), [str(ws)])
    assert not escapes_roots(str(ws / "alias.py"), [str(ws)])
    (ws / ".env").write_text("def FROM_DOTENV(): pass\n")
    (ws / "id_rsa.py").write_text("def FROM_KEY(): pass\n")
    (ws / "private").mkdir()
    (ws / "private" / "conf.py").write_text("def FROM_PRIVATE(): pass\n")
    index = WorkspaceIndex([str(ws)], secret_paths=["private"])
    index.build(workers=0)
    assert index.definitions("INSIDE")
    for name in ("LEAKED_OUTSIDE", "FROM_KEY", "FROM_PRIVATE"):
        assert not index.definitions(name), name
    assert index.stats.skipped.get("outside") == 1
    # A file event for the link is refused too.
    assert not index.update_file(str(ws / "link.py"))
    assert not index.definitions("LEAKED_OUTSIDE")


def test_index_limit_is_counted_not_remembered(tmp_path):
    for i in range(150):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}(): pass\n")
    index = WorkspaceIndex([str(tmp_path)], max_files=100)
    index.build(workers=0)
    assert len(index.files) == 100
    assert index.stats.skipped == {"limit": 50}
