use flowhost_sdk::prelude::*;

#[node]
struct Upper;

fn main() {}
