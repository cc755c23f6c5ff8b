use flowhost_sdk::prelude::*;

#[node(map)]
fn length(text: &str) -> usize {
    text.len()
}

fn main() {}
