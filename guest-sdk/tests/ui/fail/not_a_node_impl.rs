use flowhost_sdk::prelude::*;

struct Counter;

#[node]
impl Counter {
    fn new() -> Self {
        Counter
    }
}

fn main() {}
