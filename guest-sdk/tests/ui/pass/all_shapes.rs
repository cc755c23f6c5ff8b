//! Every shape of `#[node]` compiles, and runs natively through the SDK's harness.
use flowhost_sdk::prelude::*;
use flowhost_sdk::testing::Harness;

#[derive(serde::Deserialize)]
struct Suffix {
    suffix: String,
}

#[node(map)]
fn tag(text: &str, config: &Suffix) -> String {
    format!("{text}{}", config.suffix)
}

mod filter {
    use super::*;
    #[node(filter)]
    pub fn short(text: &str) -> bool {
        text.len() < 4
    }
}

mod filter_map {
    use super::*;
    #[node(filter_map)]
    pub fn parse(text: &str) -> Option<String> {
        text.parse::<u32>().ok().map(|n| (n * 2).to_string())
    }
}

mod flat_map {
    use super::*;
    #[node(flat_map)]
    pub fn chars(text: &str) -> Vec<String> {
        text.chars().map(String::from).collect()
    }
}

mod general {
    use super::*;
    #[node]
    pub fn route(msg: &Message<'_>, out: &mut Output<'_>) -> Result<(), NodeError> {
        let port = if msg.payload().len() % 2 == 0 { "even" } else { "odd" };
        out.forward_to(port, msg)
    }
}

fn main() {
    let mut n = Harness::<TagNode>::new(serde_json::json!({ "suffix": "!" })).unwrap();
    assert_eq!(n.process(["a"]).unwrap().texts(), ["a!"]);
    let mut n = Harness::<filter::ShortNode>::new(serde_json::json!({})).unwrap();
    assert_eq!(n.process(["abc", "abcd"]).unwrap().texts(), ["abc"]);
    let mut n = Harness::<filter_map::ParseNode>::new(serde_json::json!({})).unwrap();
    assert_eq!(n.process(["2", "x"]).unwrap().texts(), ["4"]);
    let mut n = Harness::<flat_map::CharsNode>::new(serde_json::json!({})).unwrap();
    assert_eq!(n.process(["ab"]).unwrap().texts(), ["a", "b"]);
    let mut n = Harness::<general::RouteNode>::with_ports(serde_json::json!({}), &["in"], &["even", "odd"]).unwrap();
    let out = n.process(["ab", "c"]).unwrap();
    assert_eq!((out.on("even").len(), out.on("odd").len()), (1, 1));
}
