use flowhost_sdk::prelude::*;

#[node]
fn route(msg: Message<'_>, port: &str) -> Result<(), NodeError> {
    let _ = (msg, port);
    Ok(())
}

fn main() {}
