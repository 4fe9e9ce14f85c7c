use crate::shapes::{area, Point as P};

fn main() {
    let p = P::new(1.0, 2.0);
    println!("{}", area(p.x));
}
