"""Plane geometry."""
import math

MAX_RADIUS = 100
_unit = 1.0


class Circle:
    """A circle in the plane."""

    sides: int = 0

    def __init__(self, radius: float, *, name: str = "c") -> None:
        self.radius = radius

    def area(self) -> float:
        """Area of the circle."""
        return math.pi * self.radius**2

    @property
    def diameter(self) -> float:
        return 2 * self.radius

    def _private(self):
        pass


def circle_area(radius: float) -> float:
    """Area of a circle of the given radius.

    Longer explanation that is not shown."""
    return Circle(radius).area()


async def fetch_shape(url: str, timeout: float = 1.0) -> Circle:
    def helper():  # nested: not indexed
        return 1
    return Circle(helper())
