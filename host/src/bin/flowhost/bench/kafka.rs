//! Kafka: topic → wasm passthrough → topic through flowhost's Kafka transport (consumer
//! group, acks tracked per batch, offsets committed after the outputs were acknowledged)
//! against a raw rdkafka loop on the same broker: poll, produce, and every 100 ms flush
//! and commit (the same at-least-once promise). Both read the same input topic with a
//! fresh group. Joining the group takes seconds (tens with Kafka's default session
//! timeout), more than the work, so it is its own row (start → first record out) and the
//! throughput row counts from the first record out to the last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::BaseRecord;

use super::{Better, Fixtures, Row};
use flowhost::flow::Ack;
use flowhost::manifest::{Graph, KafkaSpec};
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;
use flowhost::transport::kafka::client::{Kafka, flush, send};

const PARTITIONS: i32 = 4;

pub(super) fn run(fx: &Fixtures, brokers: &str, messages: u64) -> anyhow::Result<Vec<Row>> {
    let spec = KafkaSpec {
        brokers: Some(brokers.to_owned()),
        partitions: PARTITIONS,
        ..KafkaSpec::default()
    };
    let kafka = Kafka::new(&spec)?;
    kafka.connect()?;
    let run_id = flowhost::clock::now_millis();
    let input = format!("bench.in.{run_id}");
    let (raw_out, fh_out) = (format!("bench.raw.{run_id}"), format!("bench.flowhost.{run_id}"));
    kafka.create_topics(&[
        (input.clone(), false),
        (raw_out.clone(), false),
        (fh_out.clone(), false),
    ])?;
    let shutdown = Arc::new(Shutdown::default());

    // The input: `messages` records of 100 bytes, keyed over 64 keys.
    let producer = kafka.producer("bench input", None, &shutdown)?;
    let payload = [b'x'; 100];
    for i in 0..messages {
        let key = format!("k{}", i % 64);
        send(
            &producer,
            BaseRecord::with_opaque_to(&input, Ack::none())
                .key(&key)
                .payload(&payload[..]),
        )?;
    }
    flush(&producer, &shutdown)?;

    let raw = timed(&kafka, &raw_out, messages, |stop| {
        raw_loop(&kafka, &input, &raw_out, stop, &shutdown)
    })?;
    let flowhost = timed(&kafka, &fh_out, messages, |stop| {
        through_flowhost(fx, &kafka, &input, &fh_out, stop)
    })?;
    let rate = |t: &Timing| (messages - 1) as f64 / (t.last - t.first).as_secs_f64().max(1e-9);
    eprintln!(
        "  kafka: raw loop {:.2?} (first record out after {:.2?}), flowhost {:.2?} (after {:.2?}) for {messages} messages",
        raw.last, raw.first, flowhost.last, flowhost.first
    );
    Ok(vec![
        Row::new(
            "kafka topic → passthrough → topic, from the first record out",
            rate(&flowhost),
            Some(rate(&raw)),
            "msg/s",
            Better::Higher,
        )
        .ratio_target(0.8),
        Row::new(
            "kafka group join: start → first record out",
            flowhost.first.as_secs_f64(),
            Some(raw.first.as_secs_f64()),
            "s",
            Better::Lower,
        ),
    ])
}

/// When the first and the last of the output records arrived, from the start.
struct Timing {
    first: Duration,
    last: Duration,
}

/// Runs `run` until `messages` records arrived in `output` (counted by a consumer of
/// its own, the same for both), then stops it; the time it took.
fn timed(
    kafka: &Kafka,
    output: &str,
    messages: u64,
    run: impl FnOnce(&Shutdown) -> anyhow::Result<()> + Send,
) -> anyhow::Result<Timing> {
    // Assigned, not subscribed: no group to join, so it sees records as they come.
    let counter: BaseConsumer = kafka
        .consumer_config(&format!("{output}.count"))
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions.add_partition_offset(output, p, rdkafka::Offset::Beginning)?;
    }
    counter.assign(&partitions)?;
    let stop = Shutdown::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        let running = s.spawn(|| run(&stop));
        let mut seen = 0;
        let mut first = None;
        let last = loop {
            if let Some(m) = counter.poll(Duration::from_millis(50)) {
                m?;
                seen += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
            if seen >= messages || running.is_finished() {
                break started.elapsed();
            }
        };
        stop.request_stop();
        running
            .join()
            .map_err(|_| anyhow::anyhow!("the run panicked"))??;
        anyhow::ensure!(seen >= messages, "only {seen} of {messages} messages came out");
        Ok(Timing {
            first: first.unwrap_or(last),
            last,
        })
    })
}

/// Poll, produce, and every 100 ms flush and commit, until stopped.
fn raw_loop(
    kafka: &Kafka,
    input: &str,
    output: &str,
    stop: &Shutdown,
    shutdown: &Arc<Shutdown>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka.consumer_config(&format!("{input}.raw")).create()?;
    consumer.subscribe(&[input])?;
    let producer = kafka.producer("raw loop", None, shutdown)?;
    let mut committed = Instant::now();
    while !stop.is_stopping() {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            let mut record =
                BaseRecord::with_opaque_to(output, Ack::none()).payload(m.payload().unwrap_or_default());
            if let Some(key) = m.key() {
                record = record.key(key);
            }
            send(&producer, record)?;
        }
        if committed.elapsed() > Duration::from_millis(100) {
            flush(&producer, shutdown)?;
            consumer.commit_consumer_state(CommitMode::Async)?;
            committed = Instant::now();
        }
    }
    Ok(flush(&producer, shutdown)?)
}

/// The graph `kafka source → passthrough → kafka sink`, run until stopped.
fn through_flowhost(
    fx: &Fixtures,
    kafka: &Kafka,
    input: &str,
    output: &str,
    stop: &Shutdown,
) -> anyhow::Result<()> {
    let dir = super::process::scratch("kafka")?;
    let manifest = format!(
        r#"name = "kafka-bench"
transport = "kafka"
[kafka]
brokers = "{brokers}"
partitions = {PARTITIONS}
[sources.in]
kind = "kafka"
topic = "{input}"
[nodes.pass]
module = "{module}"
[sinks.out]
kind = "kafka"
topic = "{output}"
[[edges]]
from = "in"
to = "pass"
[[edges]]
from = "pass"
to = "out"
"#,
        brokers = kafka.brokers,
        module = fx.passthrough.path.display()
    );
    let path = dir.join("graph.toml");
    std::fs::write(&path, manifest)?;
    let plan = flowhost::plan::Plan::resolve(Graph::load(&path)?, None)?;
    let shutdown = Arc::new(Shutdown::default());
    std::thread::scope(|s| {
        let running = s.spawn(|| flowhost::run(&plan, &fx.engine, &RunOptions::default(), &shutdown));
        while !stop.is_stopping() && !running.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        shutdown.request_stop();
        let report = running
            .join()
            .map_err(|_| anyhow::anyhow!("the Kafka graph panicked"))??;
        match report.failure {
            Some(failure) => anyhow::bail!("the Kafka graph failed: {failure}"),
            None => Ok(()),
        }
    })
}
