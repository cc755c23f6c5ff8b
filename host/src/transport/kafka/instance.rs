//! This process's stable place among the processes that run a graph on this host, for
//! transactional ids that survive a crash (Kafka's fencing works per transactional id).
//!
//! A process takes the lowest `<host>-<n>` that no live process of the graph holds: an
//! advisory lock on `<tmp>/flowhost/<graph>/instance-<n>.lock`, which the kernel releases
//! when its holder dies, `kill -9` included. A restarted process therefore takes the place
//! its predecessor held, and with it the predecessor's transactional ids: its first
//! `init_transactions` fences the dead producer and aborts its open transaction at once,
//! instead of leaving it open (which holds back every `read_committed` reader until the
//! broker times it out). Two live processes on one host get different places, so they
//! never fence each other. `FLOWHOST_INSTANCE` names the place instead (for a container
//! whose host name is stable but whose temporary folder is not, e.g. a StatefulSet pod).

use std::fs::{File, OpenOptions};

use super::client::ClientError;

/// A claimed place; it is held until this is dropped.
#[derive(Debug)]
pub struct Instance {
    /// `<host>-<n>`, or `FLOWHOST_INSTANCE`.
    pub name: String,
    _lock: Option<File>,
}

impl Instance {
    /// Claims a place for a process of graph `graph` on this host.
    pub fn claim(graph: &str) -> Result<Instance, ClientError> {
        if let Ok(name) = std::env::var("FLOWHOST_INSTANCE")
            && !name.is_empty()
        {
            return Ok(Instance { name, _lock: None });
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let host = host
            .trim()
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
        let dir = std::env::temp_dir().join("flowhost").join(graph);
        let refuse = |e: std::io::Error| {
            ClientError::Refused(format!("claiming an instance place in {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(&dir).map_err(refuse)?;
        for n in 0..4096 {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("instance-{n}.lock")))
                .map_err(refuse)?;
            if file.try_lock().is_ok() {
                return Ok(Instance {
                    name: format!("{host}-{n}"),
                    _lock: Some(file),
                });
            }
        }
        Err(ClientError::Refused(format!(
            "4096 processes of graph `{graph}` already run on this host"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_processes_get_different_places_and_a_freed_one_is_taken_again() {
        let graph = format!("instance-test-{}", std::process::id());
        let a = Instance::claim(&graph).unwrap();
        let b = Instance::claim(&graph).unwrap();
        assert_ne!(a.name, b.name);
        let freed = a.name.clone();
        drop(a);
        let c = Instance::claim(&graph).unwrap();
        assert_eq!(c.name, freed, "the lowest free place: the one just released");
        drop((b, c));
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join("flowhost").join(&graph));
    }
}
