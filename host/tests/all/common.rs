//! A `flowhost run` of a graph reading stdin, with its admin endpoint on a free port, for
//! tests that watch and steer a running graph.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

pub use flowhost_tests::Broker;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use flowhost::topology::status::StatusReport;

/// The `flowhost` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowhost"))
}

/// The `flowhost` binary run inside network namespace `netns`.
pub fn in_netns(netns: &str) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(env!("CARGO_BIN_EXE_flowhost"));
    command
}

/// The module of fixture crate `functions/<name>`, built if stale.
pub fn module(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../functions")
        .join(name);
    flowhost::plan::build_crate(&dir).unwrap()
}

/// Streams `m<n>` lines (or what `line` makes of `n`) into `out` at a steady pace, up to
/// what `allowed` allows, `total` in all; then hands `out` back (the caller says when
/// the input ends: a graph reading it may end with it).
pub fn stream<W: Write + Send + 'static>(
    mut out: W,
    total: usize,
    allowed: Arc<AtomicUsize>,
    line: fn(usize) -> String,
) -> std::thread::JoinHandle<W> {
    std::thread::spawn(move || {
        let mut next = 0;
        while next < total {
            let until = allowed.load(Ordering::Acquire).min(next + 100).min(total);
            if until == next {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let chunk: String = (next..until).map(line).collect();
            out.write_all(chunk.as_bytes()).unwrap();
            out.flush().unwrap();
            next = until;
            std::thread::sleep(Duration::from_millis(2));
        }
        out
    })
}

/// What a finished command printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running graph.
pub struct Running {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    /// Its admin endpoint.
    pub addr: String,
    /// The network namespace it runs in, if not this one's.
    netns: Option<String>,
    /// Its log lines (stderr).
    log: Receiver<String>,
    /// Every line so far, for a failure's report.
    all: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// `flowhost run graph.toml --admin 127.0.0.1:0 <args>` in `dir`, stdin piped; waits
    /// for the endpoint's address in the log.
    pub fn start(dir: &Path, args: &[&str]) -> Running {
        Running::start_with(dir, args, &[])
    }

    /// [`Running::start`] with environment variables `env` set.
    pub fn start_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        Running::spawn(bin(), None, dir, args, env)
    }

    /// [`Running::start`] inside network namespace `netns` (`ip netns exec`, which
    /// execs the binary: the child is the graph's process). Its admin endpoint is on
    /// that namespace's loopback, so its status is asked for from inside.
    pub fn start_in(netns: &str, dir: &Path, args: &[&str]) -> Running {
        Running::spawn(in_netns(netns), Some(netns), dir, args, &[])
    }

    fn spawn(
        mut command: Command,
        netns: Option<&str>,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Running {
        let mut child = command
            .args(["run", "graph.toml", "--admin", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = channel();
        let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = all.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        let addr = loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the run logs its admin endpoint");
            if let Some(rest) = line.split("admin endpoint on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        let stdin = child.stdin.take();
        Running {
            child,
            stdin,
            addr,
            netns: netns.map(str::to_owned),
            log,
            all,
        }
    }

    /// The graph's status now.
    pub fn status(&self) -> StatusReport {
        let url = format!("http://{}/status", self.addr);
        let get = || match &self.netns {
            None => ureq::get(&url)
                .call()
                .and_then(|mut r| r.body_mut().read_to_string())
                .map_err(|e| e.to_string()),
            Some(ns) => {
                let out = in_netns(ns)
                    .args(["status", "--json", "--admin", &self.addr])
                    .output()
                    .map_err(|e| e.to_string())?;
                match out.status.success() {
                    true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
                    false => Err(text(&out)),
                }
            }
        };
        // A connection can fail once on a loaded machine; a process that is gone fails
        // every time, and its last words are in its log.
        let body = get()
            .or_else(|_| {
                std::thread::sleep(Duration::from_millis(200));
                get()
            })
            .unwrap_or_else(|e| {
                std::thread::sleep(Duration::from_millis(500));
                let log = self.all.lock().unwrap().clone();
                let exited = std::process::Command::new("sh")
                    .args([
                        "-c",
                        &format!(
                            "kill -0 {} 2>/dev/null && echo running || echo gone",
                            self.child.id()
                        ),
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .unwrap_or_default();
                panic!(
                    "{url}: {e}; the process is {exited}; its last log lines:\n{}",
                    log[log.len().saturating_sub(40)..].join("\n")
                )
            });
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} answered no status: {e}: {body}"))
    }

    /// Polls until `ok` holds for the status (a bounded wait, not a timing assertion).
    pub fn wait_for(&self, what: &str, ok: impl Fn(&StatusReport) -> bool) -> StatusReport {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "never saw {what}: {s:#?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a log line containing `needle`; the line.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("never logged {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every log line so far, one per line.
    pub fn log_so_far(&self) -> String {
        self.all.lock().unwrap().join("\n")
    }

    /// Ends the input and waits for the graph to finish; its exit status.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    /// A test that failed half-way leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
