"""Completion engine: pure logic, no pygls, no file IO."""
