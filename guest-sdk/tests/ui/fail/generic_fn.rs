use flowhost_sdk::prelude::*;

#[node(map)]
fn echo<T: AsRef<str>>(text: T) -> String {
    text.as_ref().to_owned()
}

fn main() {}
