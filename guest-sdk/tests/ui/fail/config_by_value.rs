use flowhost_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {
    suffix: String,
}

#[node(map)]
fn tag(text: &str, config: Config) -> String {
    format!("{text}{}", config.suffix)
}

fn main() {}
