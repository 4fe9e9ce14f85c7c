from . import util
from .geometry import Circle, circle_area as area_of
from .util.text import slugify


def describe(c: Circle) -> str:
    return slugify(f"circle {area_of(c.radius)}")
