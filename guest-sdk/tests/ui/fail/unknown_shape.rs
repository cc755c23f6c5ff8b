use flowhost_sdk::prelude::*;

#[node(mapp)]
fn upper(text: &str) -> String {
    text.to_uppercase()
}

fn main() {}
