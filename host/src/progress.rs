//! The progress line of `flowhost run` on a terminal: messages read and per second,
//! per-node counts, elapsed time. Drawn by indicatif from the run's status, four times a
//! second, on a thread of its own; cleared when the run ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::topology::Status;

/// A running progress line; dropping it clears the line.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Draws `status` on stderr (nothing if stderr is not a terminal).
    pub fn start(status: Arc<Status>) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid template"),
        );
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let (mut last, mut at) = (0u64, Instant::now());
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let r = status.report();
                    let read: u64 = r.sources.iter().map(|s| s.read).sum();
                    let rate = (read - last.min(read)) as f64 / at.elapsed().as_secs_f64().max(1e-3);
                    (last, at) = (read, Instant::now());
                    let nodes: Vec<String> = r
                        .nodes
                        .iter()
                        .map(|n| {
                            let errors = if n.counts.errors > 0 {
                                format!(" err {}", n.counts.errors)
                            } else {
                                String::new()
                            };
                            format!("{} {}→{}{errors}", n.id, n.counts.received, n.counts.emitted)
                        })
                        .collect();
                    bar.set_message(format!("read {read} ({rate:.0} msg/s) | {}", nodes.join(" | ")));
                    bar.tick();
                }
                bar.finish_and_clear();
            })
            .ok();
        Progress { done, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
