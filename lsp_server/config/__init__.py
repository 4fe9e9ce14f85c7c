"""Settings: typed, validated once, camelCase from the client."""

from lsp_server.config.settings import (
    BACKENDS,
    DEFAULT_MODEL,
    SETTING_KEYS,
    Settings,
    parse_settings,
    to_camel_dict,
)

__all__ = ["BACKENDS", "DEFAULT_MODEL", "SETTING_KEYS", "Settings", "parse_settings", "to_camel_dict"]
