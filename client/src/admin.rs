//! The admin client: topics, partitions and configs.

use std::time::Duration;

use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::protocol::{self, ClusterMetadata, ConfigValue, NewTopic, TopicInfo};

/// Connects to the first reachable of `servers` (HOST:PORT each).
pub async fn connect_any(
    servers: &[String],
    client_id: &str,
    max_in_flight: usize,
    timeout: Duration,
) -> Result<Connection> {
    let mut last = ClientError::Config("bootstrap servers are empty".into());
    for server in servers {
        match Connection::connect(server, client_id, max_in_flight, timeout).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Administers topics through one node.
#[derive(Debug)]
pub struct Admin {
    conn: Connection,
}

fn single(results: Vec<(String, Result<()>)>, name: &str) -> Result<()> {
    results
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or_else(|| Err(ClientError::Protocol(format!("no result for topic {name:?}"))), |(_, r)| r)
}

impl Admin {
    /// Connects to the first reachable bootstrap server.
    pub async fn connect(bootstrap_servers: &[String]) -> Result<Admin> {
        let conn = connect_any(bootstrap_servers, "sluice-admin", 8, Duration::from_secs(30)).await?;
        Ok(Admin { conn })
    }

    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let name = topic.name.clone();
        single(protocol::create_topics(&self.conn, &[topic], false).await?, &name)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        single(protocol::delete_topics(&self.conn, &[name.to_string()]).await?, name)
    }

    /// Grows a topic to `count` partitions (partitions are never removed).
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<()> {
        single(protocol::create_partitions(&self.conn, &[(name.to_string(), count)]).await?, name)
    }

    /// Every topic's name, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.metadata(None).await?.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let metadata = self.metadata(Some(&[name.to_string()])).await?;
        metadata
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("no metadata for topic {name:?}")))
    }

    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata> {
        protocol::metadata(&self.conn, topics).await
    }

    /// Every config of a topic with its effective value.
    pub async fn describe_configs(&self, name: &str) -> Result<Vec<ConfigValue>> {
        protocol::describe_configs(&self.conn, &[name.to_string()])
            .await?
            .into_iter()
            .next()
            .map_or_else(|| Err(ClientError::Protocol(format!("no configs for topic {name:?}"))), |(_, r)| r)
    }

    /// Sets `set` and returns `delete` to the node's defaults.
    pub async fn alter_configs(&self, name: &str, set: &[(String, String)], delete: &[String]) -> Result<()> {
        protocol::alter_configs(&self.conn, name, set, delete).await?
    }
}
