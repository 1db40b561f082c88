//! Sends a few keyed records and prints where each landed.
//!
//! Start a node (`cargo run --bin sluice-node`), then:
//! `cargo run -p sluice-client --example produce -- 127.0.0.1:9292 demo`

use sluice_client::producer::{Producer, ProducerConfig, ProducerRecord};
use sluice_client::{Admin, NewTopic};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9292".into());
    let topic = args.next().unwrap_or_else(|| "demo".into());
    let admin = Admin::connect(std::slice::from_ref(&bootstrap)).await?;
    // An existing topic is fine.
    let _ = admin.create_topic(NewTopic { name: topic.clone(), partitions: 3, ..NewTopic::default() }).await;
    let producer =
        Producer::new(ProducerConfig { bootstrap_servers: vec![bootstrap], ..ProducerConfig::default() }).await?;
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record =
            ProducerRecord::new(&topic, format!("value {i}")).key(format!("key-{}", i % 3)).header("source", "example");
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        let m = d.await?;
        eprintln!("{}-{} @ {:?}", m.topic, m.partition, m.offset);
    }
    producer.close().await;
    Ok(())
}
