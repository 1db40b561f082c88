//! Reads a topic from the beginning with a blocking consumer (no async code) and prints
//! each record until 2 s pass without one.
//!
//! `cargo run -p sluice-client --example consume -- 127.0.0.1:9292 demo`

use std::time::{Duration, Instant};

use sluice_client::blocking::{BlockingAdmin, BlockingConsumer};
use sluice_client::consumer::{ConsumerConfig, SeekTo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9292".into());
    let topic = args.next().unwrap_or_else(|| "demo".into());
    let partitions = BlockingAdmin::connect(std::slice::from_ref(&bootstrap))?.partitions(&topic)?;
    let mut consumer =
        BlockingConsumer::new(ConsumerConfig { bootstrap_servers: vec![bootstrap], ..ConsumerConfig::default() })?;
    consumer.assign(partitions.iter().map(|&p| (topic.clone(), p)).collect());
    for &p in &partitions {
        consumer.seek(&topic, p, SeekTo::Beginning)?;
    }
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(2) {
        for r in consumer.poll(Duration::from_millis(500))? {
            last = Instant::now();
            eprintln!(
                "{}-{} @{} key={:?} value={:?}",
                r.topic,
                r.partition,
                r.offset,
                r.key.as_deref().map(String::from_utf8_lossy),
                r.value.as_deref().map(String::from_utf8_lossy)
            );
        }
    }
    Ok(())
}
