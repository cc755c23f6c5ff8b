use flowhost_sdk::prelude::*;

#[node(map)]
fn upper(text: &str, a: &u32, b: &u32) -> String {
    text.to_uppercase()
}

fn main() {}
