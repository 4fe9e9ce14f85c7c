"""LSP handlers (the only package that imports pygls/lsprotocol)."""
