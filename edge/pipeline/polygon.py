"""Checks on a polygon drawn on a camera image (zones and masks), in pure Python.

Points are fractions of the image width and height. A polygon must have at least 3 points, lie on the
image, enclose an area and not cross itself: a bow-tie would fill in a way nobody drew, and the
even-odd point test would disagree with the filled mask about which half is inside.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]
_MIN_AREA = 1e-6  # of the whole image: below it the polygon is a line, not a zone


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    # q lies on the segment p-r, given the three are collinear.
    return min(p[0], r[0]) <= q[0] <= max(p[0], r[0]) and min(p[1], r[1]) <= q[1] <= max(p[1], r[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether the closed segments p1-p2 and q1-q2 share a point."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True
    return ((d1 == 0 and _on_segment(q1, p1, q2)) or (d2 == 0 and _on_segment(q1, p2, q2))
            or (d3 == 0 and _on_segment(p1, q1, p2)) or (d4 == 0 and _on_segment(p1, q2, p2)))


def area(points: Sequence[Point]) -> float:
    """The polygon's unsigned area (shoelace formula)."""
    n = len(points)
    s = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(s) / 2.0


def polygon_problem(points: Sequence[Point], what: str = "polygon") -> str | None:
    """Why `points` is not a usable polygon on the image, or None if it is."""
    if len(points) < 3:
        return f"a {what} needs at least 3 points (got {len(points)})"
    for i, (x, y) in enumerate(points):
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return (f"{what} point {i + 1} ({x:g}, {y:g}) is outside the frame: points are fractions "
                    "of the image (0..1)")
    n = len(points)
    for i in range(n):
        a1, a2 = points[i], points[(i + 1) % n]
        for j in range(i + 1, n):
            if j == i or (j + 1) % n == i or j == (i + 1) % n:
                continue  # neighbouring edges share a corner
            if segments_intersect(a1, a2, points[j], points[(j + 1) % n]):
                return f"the {what} crosses itself (edges {i + 1} and {j + 1}): draw its corners in order"
    if area(points) < _MIN_AREA:
        return f"the {what} encloses no area"
    return None
