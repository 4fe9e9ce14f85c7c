"""Workspace context: open documents, syntax trees, symbol index, retrieval."""
