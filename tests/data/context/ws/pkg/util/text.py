import re

_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(value: str, sep: str = "-") -> str:
    """Lower-case, URL-safe form of a title."""
    return _SLUG.sub(sep, value.lower()).strip(sep)
