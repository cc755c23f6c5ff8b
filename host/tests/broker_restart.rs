//! The Kafka link's health through a broker's death and return.
//!
//! Ignored until librdkafka is fixed: in about one run in three the flowhost process dies
//! by SIGSEGV inside librdkafka right after it lost the broker — a core dump shows
//! `rd_kafka_metadata_update_op` → `rd_kafka_metadata_cache_find` → `strcmp` on
//! librdkafka's main thread, the crash reported upstream as confluentinc/librdkafka#5280
//! (open). flowhost's part (health current again without a record read) passes whenever
//! the process survives: `cargo test --release -p flowhost --test broker_restart --
//! --ignored`.

#[allow(dead_code)]
#[path = "all/common.rs"]
mod common;

use common::{Broker, Running};

#[test]
#[ignore = "librdkafka crashes in rd_kafka_metadata_cache_find after a broker loss (confluentinc/librdkafka#5280); see the module comment"]
fn health_follows_the_broker_down_and_back_without_a_record_read() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pass = flowhost::plan::build_crate(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/passthrough"),
    )
    .unwrap();
    let manifest = format!(
        "name = \"health\"\ntransport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n\
         [sources.in]\nkind = \"stdin\"\n[nodes.pass]\nmodule = \"{}\"\n[sinks.out]\nkind = \"null\"\n\
         [[edges]]\nfrom = \"in\"\nto = \"pass\"\n[[edges]]\nfrom = \"pass\"\nto = \"out\"\n",
        broker.addr,
        pass.display()
    );
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    let mut a = Running::start(dir.path(), &[]);
    a.wait_log("sink `out`: 4 partition(s) assigned");
    let stdin = a.stdin.take().unwrap();

    // The broker goes away: status says so.
    broker.stop();
    let down = a.wait_for("the link down", |s| !s.kafka.as_ref().unwrap().connected);
    assert!(down.kafka.unwrap().errors > 0);
    // It comes back (empty: tansu keeps nothing): health is current again although no
    // record is read, from the clients' own view of their connections.
    let back = std::time::Instant::now();
    broker.restart();
    a.wait_for("the link up", |s| s.kafka.as_ref().unwrap().connected);
    eprintln!("connected again {:?} after the broker's return", back.elapsed());
    drop(stdin);
}
