use std::collections::HashMap;
use std::fmt;

pub struct Greeter {
    name: String,
}

impl Greeter {
    pub fn greet(&self, other: &str) -> String {
        let prefix = "Hello";
        format!("{}, {}", prefix, self.name) // CURSOR
    }
}

fn helper(x: i32) -> i32 {
    x + 1
}
