use flowhost_sdk::prelude::*;

#[node(map)]
async fn upper(text: &str) -> String {
    text.to_uppercase()
}

fn main() {}
