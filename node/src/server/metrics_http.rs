//! The Prometheus endpoint: `GET /metrics` on `--metrics-listen`, served by shard 0,
//! which sums every shard's metrics for each scrape.

use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::metrics::Metrics;
use crate::shard::{Shard, ShardId, ShardReply, ShardRequest};

/// The largest HTTP request head read from a scraper.
const REQUEST_HEAD_BYTES_MAX: usize = 8192;

/// Serves scrapes until the task is dropped.
pub async fn serve_metrics(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                crate::io::spawn_detached(async move {
                    if let Err(e) = scrape(&shard, stream).await {
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

async fn scrape(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
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
            .call(owner, ShardRequest::ListOffset { topic: topic.clone(), partition: *partition, timestamp: -1 })
            .await
        {
            ShardReply::Offset(Ok(Some((end, _)))) => end,
            _ => continue,
        };
        let lag = end.saturating_sub(u64::try_from(*offset).unwrap_or(0));
        let _ =
            writeln!(out, "sluice_group_lag{{group=\"{group}\",topic=\"{topic}\",partition=\"{partition}\"}} {lag}");
    }
    out
}
