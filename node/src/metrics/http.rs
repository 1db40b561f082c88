//! The Prometheus endpoint: `GET /metrics` on `--metrics-listen`, served by shard 0,
//! which sums every shard's metrics for each scrape; over TLS with `https://` (the
//! node's certificate, and the scraper's when `--tls-client-ca` is set), a handshake
//! that fails or takes over `TLS_HANDSHAKE_TIMEOUT` closing the connection.

use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sluice_io::net::Listener;
use tracing::warn;

use crate::metrics::Metrics;
use crate::shard::cluster::ClusterView;
use crate::shard::{Shard, ShardId, ShardReply, ShardRequest};

/// The largest HTTP request head read from a scraper.
const REQUEST_HEAD_BYTES_MAX: usize = 8192;

/// Serves scrapes until the task is dropped; with `tls`, over TLS.
pub async fn serve_metrics(shard: Rc<Shard>, listener: Listener, tls: Option<crate::tls::ShardTls>) {
    let tls = tls.map(Rc::new);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                let tls = tls.clone();
                crate::io::spawn_detached(async move {
                    let result = match tls {
                        None => scrape(&shard, stream).await,
                        Some(tls) => match tls.acceptor() {
                            (Some(acceptor), _) => {
                                let timeout = crate::listener::TLS_HANDSHAKE_TIMEOUT;
                                match crate::io::timeout(timeout, acceptor.accept(stream)).await {
                                    Some(Ok(stream)) => scrape(&shard, stream).await,
                                    Some(Err(e)) => Err(e),
                                    None => Err(std::io::Error::other("the TLS handshake took too long")),
                                }
                            }
                            (None, error) => Err(std::io::Error::other(error.unwrap_or_default())),
                        },
                    };
                    if let Err(e) = result {
                        warn!("metrics request failed: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("metrics accept failed: {e}");
                crate::io::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn scrape<S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin>(
    shard: &Rc<Shard>,
    mut stream: S,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > REQUEST_HEAD_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        let mut text = gather(shard).await.render(shard.shards);
        text.push_str(&group_lag(shard).await);
        text.push_str(&cluster_gauges(&shard.cluster_view(), shard.config.node_id));
        ("200 OK", text)
    } else {
        ("404 Not Found", "only /metrics is served here\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.close().await
}

async fn gather(shard: &Rc<Shard>) -> Metrics {
    let mut total = Metrics::default();
    for s in 0..shard.shards {
        if let ShardReply::Metrics(m) = shard.call(ShardId(s), ShardRequest::Metrics).await {
            total.merge(&m);
        }
    }
    total
}

/// A cluster node's view, as Kafka's broker metrics put it: whether it is the controller,
/// the live nodes, the partitions it leads, those of them whose ISR is short of their
/// replicas (UnderReplicatedPartitions), and the partitions without a leader
/// (OfflinePartitionsCount).
fn cluster_gauges(view: &ClusterView, me: u32) -> String {
    let led: Vec<_> = view.partitions.values().filter(|s| s.leader.is_some_and(|l| l.0 == me)).collect();
    let gauges = [
        (
            "cluster_is_controller",
            "1 when this node is the controller.",
            u64::from(view.controller.is_some_and(|c| c.0 == me)),
        ),
        ("cluster_live_nodes", "Nodes registered and not fenced.", view.live.len() as u64),
        ("partitions_led", "Partitions this node leads.", led.len() as u64),
        (
            "partitions_under_replicated",
            "Partitions this node leads whose ISR is smaller than their replicas.",
            led.iter().filter(|s| s.isr.len() < s.replicas.len()).count() as u64,
        ),
        (
            "partitions_offline",
            "Partitions of the cluster without a leader.",
            view.partitions.values().filter(|s| s.leader.is_none()).count() as u64,
        ),
    ];
    gauges
        .iter()
        .map(|(name, help, value)| {
            format!("# HELP sluice_{name} {help}\n# TYPE sluice_{name} gauge\nsluice_{name} {value}\n")
        })
        .collect()
}

/// Per group and partition: the committed offset and the lag (log end minus committed),
/// what Burrow reads from Kafka.
async fn group_lag(shard: &Rc<Shard>) -> String {
    use std::fmt::Write as _;
    let mut committed = Vec::new();
    for s in 0..shard.shards {
        if let ShardReply::GroupOffsets(list) = shard.call(ShardId(s), ShardRequest::GroupOffsets).await {
            committed.extend(list);
        }
    }
    committed.sort();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP sluice_group_committed_offset The offset a consumer group committed, by partition.\n# TYPE sluice_group_committed_offset gauge"
    );
    for (group, topic, partition, offset) in &committed {
        let _ = writeln!(
            out,
            "sluice_group_committed_offset{{group=\"{group}\",topic=\"{topic}\",partition=\"{partition}\"}} {offset}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_group_lag Records between a group's committed offset and the log end, by partition.\n# TYPE sluice_group_lag gauge"
    );
    for (group, topic, partition, offset) in &committed {
        let owner = shard.owner(topic, *partition);
        let end = match shard
            .call(
                owner,
                ShardRequest::ListOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    timestamp: -1,
                    read_committed: false,
                },
            )
            .await
        {
            ShardReply::Offset(Ok(Some((end, _)))) => end,
            _ => continue,
        };
        let lag = end.0.saturating_sub(u64::try_from(*offset).unwrap_or(0));
        let _ =
            writeln!(out, "sluice_group_lag{{group=\"{group}\",topic=\"{topic}\",partition=\"{partition}\"}} {lag}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::replication::ClusterPartitionId;
    use sluice_schemas::ids::LeaderEpoch;

    use super::*;
    use crate::replication::{NodeId, PartitionEpoch, PartitionState};

    fn state(id: u32, leader: Option<u32>, isr: &[u32]) -> PartitionState {
        PartitionState {
            partition: ClusterPartitionId(id),
            leader: leader.map(NodeId),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: PartitionEpoch(1),
            isr: isr.iter().map(|n| NodeId(*n)).collect(),
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        }
    }

    #[test]
    fn cluster_gauges_count_what_this_node_leads_and_what_has_no_leader() {
        let mut view =
            ClusterView { controller: Some(NodeId(2)), live: vec![NodeId(1), NodeId(2)], ..ClusterView::default() };
        view.partitions.insert(("t", 0).into(), state(0, Some(1), &[1, 2, 3]));
        view.partitions.insert(("t", 1).into(), state(1, Some(1), &[1, 2]));
        view.partitions.insert(("t", 2).into(), state(2, Some(2), &[2]));
        view.partitions.insert(("t", 3).into(), state(3, None, &[3]));
        let text = cluster_gauges(&view, 1);
        for line in [
            "sluice_cluster_is_controller 0",
            "sluice_cluster_live_nodes 2",
            "sluice_partitions_led 2",
            "sluice_partitions_under_replicated 1",
            "sluice_partitions_offline 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert!(cluster_gauges(&view, 2).lines().any(|l| l == "sluice_cluster_is_controller 1"));
    }
}
