/// A point in the plane.
pub struct Point { pub x: f64, pub y: f64 }

impl Point {
    /// A new point.
    pub fn new(x: f64, y: f64) -> Self { Point { x, y } }
}

/// Area of a circle.
pub fn area(r: f64) -> f64 { 3.14 * r * r }
