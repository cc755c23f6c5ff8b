//! Many hosts, as such: the broker and two flowhost hosts each in a network namespace of
//! its own (`ip netns`, joined by veth pairs), so data, heartbeats and commands cross a
//! network between them, not a loopback. Each host has its own hostname (from
//! `/etc/netns/<name>/hostname`, which `ip netns exec` mounts over `/etc/hostname`), so
//! the status topic tells the hosts apart.
//!
//! Needs root (or CAP_NET_ADMIN) and iproute2; where namespaces cannot be made, the test
//! says so and passes without running.

use crate::common;
use crate::common::module;
use crate::kafka::feed;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Broker, Running, in_netns, text};

/// Where the broker listens (and what it advertises), in its own namespace.
const BROKER: &str = "10.213.1.1:9092";

/// Three namespaces on this machine: `broker`, `a` and `b`. Host `a` and the broker
/// share 10.213.1.0/24, host `b` and the broker 10.213.2.0/24; each host's default route
/// goes to the broker's side of its link, so both reach the broker at [`BROKER`]; the
/// hosts reach each other only through the broker (which does not forward). Removed,
/// links and all, when dropped.
struct Network {
    /// `<prefix>-broker`, `<prefix>-a`, `<prefix>-b`.
    names: [String; 3],
}

impl Network {
    /// Makes them, or says why it cannot.
    fn make() -> Result<Network, String> {
        let prefix = format!("fh{}", std::process::id());
        let names = ["broker", "a", "b"].map(|n| format!("{prefix}-{n}"));
        let [broker, a, b] = &names;
        // Made before the first namespace, so a failure leaves nothing behind.
        let net = Network { names: names.clone() };
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(format!("`ip {}`: {}", args.join(" "), text(&out).trim())),
            }
        };
        for (name, host) in [(broker, "broker"), (a, "host-a"), (b, "host-b")] {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            let etc = Path::new("/etc/netns").join(name);
            std::fs::create_dir_all(&etc)
                .and_then(|()| std::fs::write(etc.join("hostname"), format!("{host}\n")))
                .map_err(|e| format!("cannot write {}: {e}", etc.display()))?;
        }
        for (host, subnet) in [(a, 1), (b, 2)] {
            // Interface names are at most 15 bytes: `fh<pid><a|b>` on the host's side,
            // `fh<pid><a|b>x` on the broker's.
            let side = &host[host.len() - 1..];
            let (near, far) = (format!("{prefix}{side}"), format!("{prefix}{side}x"));
            ip(&[
                "link", "add", &near, "netns", host, "type", "veth", "peer", "name", &far, "netns", broker,
            ])?;
            let (host_ip, broker_ip) = (format!("10.213.{subnet}.2"), format!("10.213.{subnet}.1"));
            ip(&["-n", host, "addr", "add", &format!("{host_ip}/24"), "dev", &near])?;
            ip(&[
                "-n",
                broker,
                "addr",
                "add",
                &format!("{broker_ip}/24"),
                "dev",
                &far,
            ])?;
            ip(&["-n", host, "link", "set", &near, "up"])?;
            ip(&["-n", broker, "link", "set", &far, "up"])?;
            ip(&["-n", host, "route", "add", "default", "via", &broker_ip])?;
        }
        Ok(net)
    }

    fn broker(&self) -> &str {
        &self.names[0]
    }

    fn a(&self) -> &str {
        &self.names[1]
    }

    fn b(&self) -> &str {
        &self.names[2]
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
    }
}

/// Polls `flowhost status graph.toml`, asked from host `netns`, until `ok` holds.
fn processes_until(
    netns: &str,
    dir: &Path,
    what: &str,
    ok: impl Fn(&[flowhost::beacon::Heartbeat]) -> bool,
) -> Vec<flowhost::beacon::Heartbeat> {
    crate::kafka::processes_until_asking(&|| in_netns(netns), dir, what, ok)
}

/// The hosts (by hostname) of the processes holding partitions of node `pass`.
fn pass_hosts(processes: &[flowhost::beacon::Heartbeat]) -> BTreeSet<String> {
    processes
        .iter()
        .filter(|p| {
            p.report
                .kafka
                .iter()
                .flat_map(|k| &k.inputs)
                .any(|g| g.vertex == "node `pass`" && !g.partitions.is_empty())
        })
        .map(|p| p.host.clone())
        .collect()
}

#[test]
fn a_graph_split_over_two_hosts_swaps_on_both_and_one_host_dying_loses_nothing() {
    let net = match Network::make() {
        Ok(net) => net,
        Err(why) => {
            eprintln!("skipped: network namespaces cannot be made here: {why}");
            return;
        }
    };
    let broker = Broker::start_in(net.broker(), BROKER);
    let dir = tempfile::tempdir().unwrap();
    // stdin → pass (passthrough, 2 replicas per process, 4 partitions) → out.txt.
    crate::kafka::pass_graph(dir.path(), &broker, "");

    // Host b runs the node; host a the whole graph (its source, the node, its sink).
    let b = Running::start_in(net.b(), dir.path(), &["--nodes", "pass"]);
    b.wait_log("node `pass`: 4 partition(s) assigned");
    let mut a = Running::start_in(net.a(), dir.path(), &[]);
    a.wait_log("sink `out`: 4 partition(s) assigned");

    // One view of both hosts, from the status topic, asked from either host.
    let seen = processes_until(net.b(), dir.path(), "both hosts holding the node", |p| {
        p.len() == 2 && pass_hosts(p).len() == 2
    });
    let mut hosts: Vec<&str> = seen.iter().map(|p| p.host.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["host-a", "host-b"]);

    let mut stdin = a.stdin.take().unwrap();
    feed(&mut stdin, 0, 1_000);
    a.wait_for("the first thousand written", |s| s.sinks[0].written == 1_000);

    // A swap issued on host b reaches all three processes over the control topic.
    let v2 = module("stamp-v2");
    let out = in_netns(net.b())
        .args(["swap", "pass", v2.to_str().unwrap(), "--graph", "graph.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches("node `pass`: swap v1").count(), 2, "{said}");
    for run in [&a, &b] {
        let s = run.status();
        assert_eq!(s.nodes[0].version, 2, "every host runs version 2");
    }

    // Host b dies mid-stream (every process of it, kill -9) once it has a share.
    let total = 40_000;
    let (sent, b_received) = crate::kafka::kill_once_it_has_a_share(&mut stdin, b, 1_000, total);
    // Host a takes its partitions over: a process joining there starts the rebalance
    // (tansu hands a dead member's partitions on when a member joins).
    let a_again = Running::start_in(net.a(), dir.path(), &["--nodes", "pass"]);
    a_again.wait_log("partition(s) assigned");
    processes_until(net.a(), dir.path(), "host a alone holding the node", |p| {
        pass_hosts(p) == BTreeSet::from(["host-a".to_owned()])
    });
    feed(&mut stdin, sent, total);
    drop(stdin);
    assert!(a.finish().success(), "the whole graph's process ends cleanly");

    // 0 lost: every input's output is there, passed through as it was before the swap
    // and stamped by v2 after.
    let out = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut payloads: Vec<&str> = Vec::new();
    for line in out.lines() {
        let payload = line.rsplit(' ').next().unwrap();
        let n: usize = payload[1..].parse().unwrap();
        match n < 1_000 {
            true => assert_eq!(line, payload),
            false => assert!(line.starts_with("v2 "), "{line}"),
        }
        payloads.push(payload);
    }
    let all = payloads.len();
    payloads.sort_unstable();
    payloads.dedup();
    let want: Vec<String> = (0..total).map(|i| format!("m{i:06}")).collect();
    assert_eq!(payloads, want, "every input's output is there");
    // At least once: the only repeats are what host b processed but had not committed.
    let duplicates = all - payloads.len();
    eprintln!("host b received {b_received} before it died; {duplicates} duplicates");
    assert!(duplicates as u64 <= b_received);
}
