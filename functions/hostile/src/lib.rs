//! A node that tries to reach outside its sandbox, as each message says, and reports what
//! happened: `allowed: …` or `denied: …`. A test fixture: the host must refuse all of it
//! unless the manifest granted it.
//!
//! - `read <path>`, `write <path>`, `list <dir>`: the filesystem.
//! - `env <NAME>`: one environment variable; `env-all`: how many it can see.
//! - `connect <host:port>`: a TCP socket.
//! - `store <name>`: a host store (reads key `k`).
//! - `args`: command-line arguments.
use flowhost_sdk::prelude::*;
use flowhost_sdk::state::Store;

/// Tries what the payload says.
#[node(map)]
pub fn hostile(msg: &str) -> String {
    let (verb, arg) = msg.split_once(' ').unwrap_or((msg, ""));
    let outcome: Result<String, String> = match verb {
        "read" => std::fs::read_to_string(arg).map_err(|e| e.to_string()),
        "write" => std::fs::write(arg, b"pwned")
            .map(|()| "wrote".to_owned())
            .map_err(|e| e.to_string()),
        "list" => std::fs::read_dir(arg)
            .map(|d| format!("{} entries", d.count()))
            .map_err(|e| e.to_string()),
        "env" => std::env::var(arg).map_err(|e| e.to_string()),
        "env-all" => match std::env::vars().count() {
            0 => Err("no variables".to_owned()),
            n => Ok(format!("{n} variables")),
        },
        "connect" => std::net::TcpStream::connect(arg)
            .map(|_| "connected".to_owned())
            .map_err(|e| e.to_string()),
        "store" => Store::open(arg)
            .and_then(|s| s.get(b"k"))
            .map(|v| format!("{v:?}"))
            .map_err(|e| e.to_string()),
        "args" => match std::env::args().count() {
            0 => Err("no arguments".to_owned()),
            n => Ok(format!("{n} arguments")),
        },
        other => Err(format!("unknown verb `{other}`")),
    };
    match outcome {
        Ok(what) => format!("allowed: {msg}: {what}"),
        Err(why) => format!("denied: {msg}: {why}"),
    }
}
