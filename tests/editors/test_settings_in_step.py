"""The editor clients and the server agree on the `quill.*` settings.

VS Code contributes them in editors/vscode/package.json (types, defaults, ranges) and sends
every non-client key to the server; the Neovim plugin checks `settings` against its own
list.  A key added to the server must be added to both, with the same default.
"""

from __future__ import annotations

import dataclasses
import json
import re

from lsp_server.config import SETTING_KEYS, Settings
from lsp_server.config.settings import BACKENDS, parse_settings, to_camel_dict
from tests.editors.conftest import REPO

PACKAGE = json.loads((REPO / "editors/vscode/package.json").read_text())
PROPS = PACKAGE["contributes"]["configuration"]["properties"]
CLIENT_ONLY = {"serverPath", "serverArgs", "languages", "trace.server"}


def vscode_server_keys() -> dict[str, dict]:
    return {k.removeprefix("quill."): v for k, v in PROPS.items() if k.removeprefix("quill.") not in CLIENT_ONLY}


def test_vscode_contributes_every_server_setting_and_no_other() -> None:
    assert set(vscode_server_keys()) == set(SETTING_KEYS)


def test_vscode_defaults_are_the_server_defaults() -> None:
    defaults = to_camel_dict(Settings())
    for key, prop in vscode_server_keys().items():
        want = defaults[key]
        got = prop["default"]
        if key == "endpoint":
            assert got == "" and want is None  # the extension sends "" as null
        else:
            assert got == want, key


def test_vscode_defaults_pass_the_server_validation_without_a_problem() -> None:
    raw = {k: (None if k == "endpoint" else p["default"]) for k, p in vscode_server_keys().items()}
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings == Settings()


def test_vscode_ranges_and_enums_match_the_server() -> None:
    props = vscode_server_keys()
    assert props["backend"]["enum"] == list(BACKENDS)
    for key, prop in props.items():
        if "minimum" in prop:
            ok, _ = parse_settings({key: prop["minimum"]})
            low, problems_low = parse_settings({key: prop["minimum"] - (1 if prop["type"] == "integer" else 0.01)})
            assert getattr(ok, _field(key)) == prop["minimum"], key
            assert problems_low, f"{key}: the server accepts less than the contributed minimum"
        if "maximum" in prop:
            _, problems_high = parse_settings({key: prop["maximum"] + 1})
            assert problems_high, f"{key}: the server accepts more than the contributed maximum"


def _field(key: str) -> str:
    from lsp_server.config import settings as mod

    return mod._FIELDS[key][0]


def test_neovim_plugin_knows_every_server_setting() -> None:
    lua = (REPO / "editors/neovim/lua/quill/config.lua").read_text()
    block = lua[lua.index("local SERVER_KEYS = {") : lua.index("}", lua.index("local SERVER_KEYS = {"))]
    keys = dict(re.findall(r"(\w+) = \"(\w+)\"", block))
    assert set(keys) == set(SETTING_KEYS)
    py_types = {f.name: f.type for f in dataclasses.fields(Settings)}
    lua_type = {"str": "string", "str | None": "string", "int": "number", "float": "number", "bool": "boolean", "tuple[str, ...]": "table"}
    for key, kind in keys.items():
        assert lua_type[str(py_types[_field(key)])] == kind, key
