import pkg.util.text
import pkg.util.text as text_mod
from pkg import Circle
from pkg.geometry import MAX_RADIUS, circle_area
from pkg.shapes import describe


def run(r: float) -> str:
    if r > MAX_RADIUS:
        raise ValueError("too big")
    c = Circle(r)
    return describe(c) + str(circle_area(r))
