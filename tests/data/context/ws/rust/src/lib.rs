pub mod shapes;

/// Twice the input.
pub fn double(x: i32) -> i32 { x * 2 }
