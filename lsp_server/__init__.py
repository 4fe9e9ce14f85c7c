"""Quill: local code completions over the Language Server Protocol."""

__version__ = "0.1.0"
