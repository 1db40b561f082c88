//! Blocking facades for plain threads: the same producer, consumer and admin client,
//! each driving its own small tokio runtime.

use std::time::Duration;

use crate::admin::Admin;
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
use crate::error::{ClientError, Result};
use crate::producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use crate::protocol::NewTopic;
use crate::security::Security;

fn runtime() -> Result<tokio::runtime::Runtime> {
    // One worker: the producer's sender task keeps sending while the caller's thread
    // blocks in `send` or `wait`.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-client")
        .enable_all()
        .build()
        .map_err(|e| ClientError::Config(format!("starting the client runtime: {e}")))
}

/// A producer for plain threads.
pub struct BlockingProducer {
    runtime: tokio::runtime::Runtime,
    producer: Producer,
}

impl std::fmt::Debug for BlockingProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockingProducer({:?})", self.producer)
    }
}

impl BlockingProducer {
    pub fn new(config: ProducerConfig) -> Result<BlockingProducer> {
        let runtime = runtime()?;
        let producer = runtime.block_on(Producer::new(config))?;
        Ok(BlockingProducer { runtime, producer })
    }

    /// Queues a record (blocking up to max.block.ms for buffer memory); `wait()` on the
    /// returned future blocks for its delivery report.
    pub fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        self.runtime.block_on(self.producer.send(record))
    }

    /// Sends a record and blocks until it is acknowledged.
    pub fn send_and_wait(&self, record: ProducerRecord) -> Result<crate::producer::RecordMetadata> {
        self.send(record)?.wait()
    }

    pub fn flush(&self) {
        self.runtime.block_on(self.producer.flush());
    }

    pub fn close(self) {
        self.runtime.block_on(self.producer.close());
    }
}

/// A consumer for plain threads.
pub struct BlockingConsumer {
    runtime: tokio::runtime::Runtime,
    consumer: Consumer,
}

impl std::fmt::Debug for BlockingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockingConsumer({:?})", self.consumer)
    }
}

impl BlockingConsumer {
    pub fn new(config: ConsumerConfig) -> Result<BlockingConsumer> {
        let runtime = runtime()?;
        let consumer = runtime.block_on(Consumer::new(config))?;
        Ok(BlockingConsumer { runtime, consumer })
    }

    pub fn assign(&mut self, partitions: Vec<(String, u32)>) {
        self.consumer.assign(partitions);
    }

    pub fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<u64> {
        self.runtime.block_on(self.consumer.seek(topic, partition, to))
    }

    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.runtime.block_on(self.consumer.poll(timeout))
    }

    #[must_use]
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.consumer.position(topic, partition)
    }
}

/// The admin client for plain threads.
pub struct BlockingAdmin {
    runtime: tokio::runtime::Runtime,
    admin: Admin,
}

impl std::fmt::Debug for BlockingAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockingAdmin({:?})", self.admin)
    }
}

impl BlockingAdmin {
    pub fn connect(bootstrap_servers: &[String]) -> Result<BlockingAdmin> {
        let runtime = runtime()?;
        let admin = runtime.block_on(Admin::connect(bootstrap_servers))?;
        Ok(BlockingAdmin { runtime, admin })
    }

    /// As `connect`, every connection secured as `security` says (TLS, a SASL login).
    pub fn connect_secured(bootstrap_servers: &[String], security: Security) -> Result<BlockingAdmin> {
        let runtime = runtime()?;
        let admin = runtime.block_on(Admin::connect_secured(bootstrap_servers, security, Duration::from_secs(30)))?;
        Ok(BlockingAdmin { runtime, admin })
    }

    pub fn create_topic(&self, topic: NewTopic) -> Result<()> {
        self.runtime.block_on(self.admin.create_topic(topic))
    }

    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.runtime.block_on(self.admin.delete_topic(name))
    }

    pub fn list_topics(&self) -> Result<Vec<String>> {
        self.runtime.block_on(self.admin.list_topics())
    }

    /// The partition ids of a topic.
    pub fn partitions(&self, name: &str) -> Result<Vec<u32>> {
        let info = self.runtime.block_on(self.admin.describe_topic(name))?;
        Ok(info.partitions?.iter().map(|p| p.partition).collect())
    }

    pub fn add_partitions(&self, name: &str, count: u32) -> Result<()> {
        self.runtime.block_on(self.admin.add_partitions(name, count))
    }
}
