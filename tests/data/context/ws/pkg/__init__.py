"""Shapes and helpers."""
from .geometry import Circle, circle_area

__all__ = ["Circle", "circle_area"]
