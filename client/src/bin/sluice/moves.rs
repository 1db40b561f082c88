//! `sluice partition` and `sluice node`: moving partitions between nodes (as
//! kafka-reassign-partitions and rpk's `cluster partitions move`), and draining a node
//! (every replica it holds moves to the other live nodes). The plan a drain makes is a
//! pure function of the cluster's metadata (`drain_plan`), tested without a node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_client::protocol::{ClusterMetadata, PartitionMove};

use crate::global::Global;
use crate::{Args, Failure};

/// How long `--wait` waits by default for moves to complete.
const WAIT_DEFAULT: Duration = Duration::from_secs(600);
/// How often `--wait` looks again.
const POLL: Duration = Duration::from_millis(500);

/// `TOPIC:PARTITION` (the topic may hold colons: the last one separates).
fn partition_of(s: &str) -> Result<(String, u32), Failure> {
    let bad = || Failure::Usage(format!("{s:?} is not TOPIC:PARTITION"));
    let (topic, partition) = s.rsplit_once(':').ok_or_else(bad)?;
    if topic.is_empty() {
        return Err(bad());
    }
    Ok((topic.to_string(), partition.parse().map_err(|_| bad())?))
}

/// `TOPIC:PARTITION=ID,ID,...`.
fn move_of(s: &str) -> Result<PartitionMove, Failure> {
    let (at, ids) =
        s.split_once('=').ok_or_else(|| Failure::Usage(format!("{s:?} is not TOPIC:PARTITION=ID,ID,...")))?;
    let (topic, partition) = partition_of(at)?;
    let replicas = ids
        .split(',')
        .map(|n| n.trim().parse::<u32>().map_err(|_| Failure::Usage(format!("{s:?}: {n:?} is not a node id"))))
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(PartitionMove { topic, partition, replicas: Some(replicas) })
}

/// Node `n`'s rack (`None`: it has none, and is a rack of its own).
fn rack_of(metadata: &ClusterMetadata, n: u32) -> Option<&str> {
    metadata.nodes.iter().find(|i| i.node_id == n).and_then(|i| i.rack.as_deref())
}

/// Whether node `to` would be a second replica in one rack among `others`.
fn shares_rack(metadata: &ClusterMetadata, others: &[u32], to: u32) -> bool {
    rack_of(metadata, to).is_some_and(|rack| others.iter().any(|o| *o != to && rack_of(metadata, *o) == Some(rack)))
}

/// Every partition `node` holds a replica of, moved to the other live nodes: its place is
/// taken by the live node holding fewest replicas among those the partition is not on
/// (counting the moves planned before), preferring a rack none of the partition's other
/// replicas is in; added last, so the partition's preferred leader becomes its next
/// replica. Refused when a partition has nowhere to go.
pub(crate) fn drain_plan(metadata: &ClusterMetadata, node: u32) -> Result<Vec<PartitionMove>, String> {
    let live: Vec<u32> = metadata.nodes.iter().map(|n| n.node_id).filter(|n| *n != node).collect();
    let mut load: BTreeMap<u32, usize> = live.iter().map(|n| (*n, 0)).collect();
    for topic in &metadata.topics {
        for p in topic.partitions.iter().flatten() {
            for r in &p.replicas {
                if let Some(count) = load.get_mut(r) {
                    *count += 1;
                }
            }
        }
    }
    let mut plan = Vec::new();
    for topic in &metadata.topics {
        for p in topic.partitions.iter().flatten() {
            if !p.replicas.contains(&node) {
                continue;
            }
            let staying: Vec<u32> = p.replicas.iter().copied().filter(|r| *r != node).collect();
            let to = live
                .iter()
                .filter(|n| !p.replicas.contains(n))
                .min_by_key(|n| (shares_rack(metadata, &staying, **n), load[*n], **n))
                .copied();
            let Some(to) = to else {
                return Err(format!(
                    "{}-{} has replicas {:?}: no other live node can take node {node}'s place (live: {live:?})",
                    topic.name, p.partition, p.replicas
                ));
            };
            *load.entry(to).or_default() += 1;
            let mut replicas: Vec<u32> = p.replicas.iter().copied().filter(|r| *r != node).collect();
            replicas.push(to);
            plan.push(PartitionMove { topic: topic.name.clone(), partition: p.partition, replicas: Some(replicas) });
        }
    }
    Ok(plan)
}

/// Moves that even out the live nodes: replicas first (a replica goes from the node with
/// the most to the node with the fewest that the partition is not on, until they differ by
/// one at most), then preferred leaders (each partition's replica list starts with the
/// node among its replicas that is the preferred leader of the fewest partitions so far;
/// the controller's preferred election then moves leaderships there). With racks, a
/// replica moves only where it puts no second replica of its partition in one rack (the
/// balance stops short rather than give up the spread). Replicas on nodes that are not
/// live stay where they are. One move per partition that changes.
pub(crate) fn balance_plan(metadata: &ClusterMetadata) -> Vec<PartitionMove> {
    let live: Vec<u32> = metadata.nodes.iter().map(|n| n.node_id).collect();
    let mut parts: Vec<(String, u32, Vec<u32>)> = metadata
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().flatten().map(|p| (t.name.clone(), p.partition, p.replicas.clone())))
        .collect();
    let before: Vec<Vec<u32>> = parts.iter().map(|(_, _, r)| r.clone()).collect();
    if live.len() < 2 {
        return Vec::new();
    }
    let count = |parts: &[(String, u32, Vec<u32>)], n: u32| parts.iter().filter(|(_, _, r)| r.contains(&n)).count();
    // Each step lowers the spread or stops: at most one step per replica.
    let replicas: usize = parts.iter().map(|(_, _, r)| r.len()).sum();
    for _ in 0..replicas {
        let most = live.iter().copied().max_by_key(|n| (count(&parts, *n), std::cmp::Reverse(*n))).unwrap_or(0);
        let least = live.iter().copied().min_by_key(|n| (count(&parts, *n), *n)).unwrap_or(0);
        if count(&parts, most) <= count(&parts, least) + 1 {
            break;
        }
        let Some(part) = parts.iter_mut().find(|(_, _, r)| {
            let staying: Vec<u32> = r.iter().copied().filter(|x| *x != most).collect();
            r.contains(&most) && !r.contains(&least) && !shares_rack(metadata, &staying, least)
        }) else {
            break;
        };
        for r in part.2.iter_mut() {
            if *r == most {
                *r = least;
            }
        }
    }
    let mut leads: BTreeMap<u32, usize> = live.iter().map(|n| (*n, 0)).collect();
    for (_, _, replicas) in parts.iter_mut() {
        let first = replicas.iter().copied().filter(|r| leads.contains_key(r)).min_by_key(|r| (leads[r], *r));
        if let Some(first) = first {
            replicas.retain(|r| *r != first);
            replicas.insert(0, first);
            *leads.entry(first).or_default() += 1;
        }
    }
    parts
        .into_iter()
        .zip(before)
        .filter(|((_, _, after), before)| after != before)
        .map(|((topic, partition, replicas), _)| PartitionMove { topic, partition, replicas: Some(replicas) })
        .collect()
}

fn describe(m: &PartitionMove) -> String {
    match &m.replicas {
        Some(r) => format!("{}-{} to {r:?}", m.topic, m.partition),
        None => format!("{}-{}: cancel", m.topic, m.partition),
    }
}

/// Sends the moves; prints one line per move; fails if any was refused.
async fn start(global: &Global, moves: &[PartitionMove]) -> Result<(), Failure> {
    let admin = global.admin().await?;
    let results = admin.alter_reassignments(moves).await?;
    let mut refused = 0;
    for (m, r) in moves.iter().zip(&results) {
        match r {
            Ok(()) => println!("{}: started", describe(m)),
            Err(e) => {
                refused += 1;
                println!("{}: refused: {e}", describe(m));
            }
        }
    }
    if refused > 0 {
        return Err(Failure::Failed(format!("{refused} of {} moves refused", moves.len())));
    }
    Ok(())
}

/// Waits until none of `moves`' partitions is moving any more (at most `limit`).
async fn wait(global: &Global, moves: &[PartitionMove], limit: Duration) -> Result<(), Failure> {
    let admin = global.admin().await?;
    let deadline = Instant::now() + limit;
    loop {
        let moving = admin.list_reassignments(None).await?;
        let left =
            moving.iter().filter(|m| moves.iter().any(|p| p.topic == m.topic && p.partition == m.partition)).count();
        if left == 0 {
            eprintln!("every move is done");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::Failed(format!("{left} partitions still moving after {limit:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn wait_limit(args: &Args) -> Result<Option<Duration>, Failure> {
    if args.one("wait").is_none() {
        return Ok(None);
    }
    Ok(Some(args.number::<u64>("timeout-ms")?.map_or(WAIT_DEFAULT, Duration::from_millis)))
}

/// `sluice partition move|cancel|moves ...`.
pub(crate) async fn partition(global: &Global, words: &[String]) -> Result<(), Failure> {
    let Some(sub) = words.first() else { return Err(Failure::Usage("partition needs a subcommand".into())) };
    let args = Args::parse(&words[1..], &["wait"])?;
    match sub.as_str() {
        "move" | "cancel" => {
            args.only(&["wait", "timeout-ms"])?;
            if args.positional.is_empty() {
                return Err(Failure::Usage(format!("partition {sub} needs at least one partition")));
            }
            let moves: Vec<PartitionMove> = if sub == "move" {
                args.positional.iter().map(|s| move_of(s)).collect::<Result<_, _>>()?
            } else {
                args.positional
                    .iter()
                    .map(|s| {
                        partition_of(s).map(|(topic, partition)| PartitionMove { topic, partition, replicas: None })
                    })
                    .collect::<Result<_, _>>()?
            };
            let limit = wait_limit(&args)?;
            start(global, &moves).await?;
            if let Some(limit) = limit {
                wait(global, &moves, limit).await?;
            }
            Ok(())
        }
        "moves" => {
            args.only(&[])?;
            let topics = (!args.positional.is_empty()).then_some(args.positional.as_slice());
            let admin = global.admin().await?;
            for m in admin.list_reassignments(topics).await? {
                println!(
                    "{}-{}: replicas {:?}, adding {:?}, removing {:?}",
                    m.topic, m.partition, m.replicas, m.adding, m.removing
                );
            }
            Ok(())
        }
        other => Err(Failure::Usage(format!("unknown partition subcommand {other:?}"))),
    }
}

/// How `balance` and `node drain` run their plan: `--dry-run` prints it, `--wait` waits
/// for it (at most the limit).
struct PlanFlags {
    dry_run: bool,
    wait: Option<Duration>,
}

impl PlanFlags {
    fn of(args: &Args) -> Result<PlanFlags, Failure> {
        Ok(PlanFlags { dry_run: args.one("dry-run").is_some(), wait: wait_limit(args)? })
    }
}

/// A planned set of moves: `nothing` said when there is none, printed with `--dry-run`,
/// else started (and with `--wait` waited for).
async fn run_plan(global: &Global, flags: PlanFlags, plan: &[PartitionMove], nothing: &str) -> Result<(), Failure> {
    if plan.is_empty() {
        eprintln!("{nothing}");
        return Ok(());
    }
    if flags.dry_run {
        for m in plan {
            println!("{}", describe(m));
        }
        return Ok(());
    }
    start(global, plan).await?;
    if let Some(limit) = flags.wait {
        wait(global, plan, limit).await?;
    }
    Ok(())
}

/// `sluice cluster balance [--dry-run] [--wait [--timeout-ms T]]`.
pub(crate) async fn balance(global: &Global, words: &[String]) -> Result<(), Failure> {
    let args = Args::parse(words, &["wait", "dry-run"])?;
    args.only(&["wait", "timeout-ms", "dry-run"])?;
    let flags = PlanFlags::of(&args)?;
    let metadata = global.admin().await?.metadata(None).await?;
    run_plan(global, flags, &balance_plan(&metadata), "the cluster is balanced").await
}

/// `sluice node drain ID [--wait [--timeout-ms T]] [--dry-run]` and `sluice node remove ID`.
pub(crate) async fn node(global: &Global, words: &[String]) -> Result<(), Failure> {
    match words.first().map(String::as_str) {
        Some("drain") => {}
        Some("remove") => {
            let args = Args::parse(&words[1..], &[])?;
            args.only(&[])?;
            let id: u32 =
                args.name("node id")?.parse().map_err(|_| Failure::Usage("the node id must be a number".into()))?;
            global.admin().await?.remove_node(id).await?;
            eprintln!("node {id} removed from the cluster");
            return Ok(());
        }
        Some(other) => return Err(Failure::Usage(format!("unknown node subcommand {other:?}"))),
        None => return Err(Failure::Usage("node needs a subcommand".into())),
    }
    let args = Args::parse(&words[1..], &["wait", "dry-run"])?;
    args.only(&["wait", "timeout-ms", "dry-run"])?;
    let id: u32 = args.name("node id")?.parse().map_err(|_| Failure::Usage("the node id must be a number".into()))?;
    let flags = PlanFlags::of(&args)?;
    let metadata = global.admin().await?.metadata(None).await?;
    let plan = drain_plan(&metadata, id).map_err(Failure::Failed)?;
    run_plan(global, flags, &plan, &format!("node {id} holds no replica")).await
}

/// `sluice controller status|add-voter ID|remove-voter ID`.
pub(crate) async fn controller(global: &Global, words: &[String]) -> Result<(), Failure> {
    let sub = words.first().map(String::as_str);
    let args = Args::parse(words.get(1..).unwrap_or_default(), &[])?;
    args.only(&[])?;
    let admin = global.admin().await?;
    let node = || -> Result<u32, Failure> {
        args.name("node id")?.parse().map_err(|_| Failure::Usage("the node id must be a number".into()))
    };
    match sub {
        Some("status") => {
            let q = admin.describe_quorum().await?;
            let list = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            println!("leader: {}", q.leader.map_or("none".to_string(), |l| l.to_string()));
            println!("voters: {}", list(&q.voters));
            println!("learners: {}", list(&q.learners));
        }
        Some("add-voter") => {
            let id = node()?;
            admin.add_voter(id).await?;
            eprintln!("node {id} is a controller voter");
        }
        Some("remove-voter") => {
            let id = node()?;
            admin.remove_voter(id).await?;
            eprintln!("node {id} is no longer a controller voter (it follows the log)");
        }
        Some(other) => return Err(Failure::Usage(format!("unknown controller subcommand {other:?}"))),
        None => return Err(Failure::Usage("controller needs a subcommand".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use sluice_client::protocol::{NodeInfo, PartitionInfo, TopicInfo};

    fn metadata(nodes: &[u32], partitions: &[&[u32]]) -> ClusterMetadata {
        let info = |(i, replicas): (usize, &&[u32])| PartitionInfo {
            partition: i as u32,
            leader: replicas.first().copied(),
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
        };
        ClusterMetadata {
            nodes: nodes
                .iter()
                .map(|n| NodeInfo { node_id: *n, host: "127.0.0.1".into(), port: 9000, rack: None })
                .collect(),
            controller_id: Some(1),
            topics: vec![TopicInfo {
                name: "t".into(),
                partitions: Ok(partitions.iter().enumerate().map(info).collect()),
            }],
        }
    }

    /// A node with nothing gets replicas until counts differ by one at most, and preferred
    /// leaders spread; a balanced cluster gets no move.
    #[test]
    fn a_balance_evens_out_replicas_and_preferred_leaders() {
        let skewed = metadata(&[1, 2, 3, 4], &[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3], &[1, 2, 3]]);
        let plan = balance_plan(&skewed);
        let mut after: Vec<Vec<u32>> =
            skewed.topics[0].partitions.as_ref().unwrap().iter().map(|p| p.replicas.clone()).collect();
        for m in &plan {
            after[m.partition as usize] = m.replicas.clone().unwrap();
        }
        let replicas = |n: u32| after.iter().filter(|r| r.contains(&n)).count();
        let leaders = |n: u32| after.iter().filter(|r| r[0] == n).count();
        assert_eq!([1, 2, 3, 4].map(replicas), [3, 3, 3, 3], "{after:?}");
        assert_eq!([1, 2, 3, 4].map(leaders), [1, 1, 1, 1], "{after:?}");
        assert!(after.iter().all(|r| r.len() == 3 && (1..r.len()).all(|i| !r[..i].contains(&r[i]))), "{after:?}");
        let balanced = metadata(&[1, 2, 3], &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
        assert!(balance_plan(&balanced).is_empty());
    }

    #[test]
    fn moves_and_partitions_parse_or_name_what_is_wrong() {
        let m = move_of("a:b:3=4, 2,3").ok().expect("accepted");
        assert_eq!((m.topic.as_str(), m.partition, m.replicas), ("a:b", 3, Some(vec![4, 2, 3])));
        for bad in ["t:1", "t=1,2", ":1=2", "t:x=1", "t:1=1,x"] {
            assert!(matches!(move_of(bad), Err(Failure::Usage(_))), "{bad}");
        }
        assert_eq!(partition_of("orders:7").ok(), Some(("orders".to_string(), 7)));
    }

    /// Each partition on the drained node gets the least loaded live node it is not on,
    /// appended; the others stay; a partition with nowhere to go refuses the drain.
    #[test]
    fn a_drain_moves_each_replica_to_the_least_loaded_other_node() {
        let plan = drain_plan(&metadata(&[1, 2, 3, 4], &[&[1, 2, 3], &[2, 3, 4], &[3, 1, 2], &[1, 4, 2]]), 1).unwrap();
        let moves: Vec<(u32, Vec<u32>)> = plan.into_iter().map(|m| (m.partition, m.replicas.unwrap())).collect();
        assert_eq!(moves, vec![(0, vec![2, 3, 4]), (2, vec![3, 2, 4]), (3, vec![4, 2, 3])]);
        assert!(drain_plan(&metadata(&[1, 2, 3], &[&[1, 2, 3]]), 1).unwrap_err().contains("no other live node"));
        assert!(drain_plan(&metadata(&[1, 2, 3], &[&[2, 3]]), 1).unwrap().is_empty());
    }

    /// With racks, a drained replica goes to a rack its partition is not in yet (even a
    /// busier node), and a balance never puts two replicas of a partition in one rack.
    #[test]
    fn drains_and_balances_keep_replicas_on_distinct_racks() {
        let with_racks = |mut m: ClusterMetadata, racks: &[(u32, &str)]| {
            for n in &mut m.nodes {
                n.rack = racks.iter().find(|(id, _)| *id == n.node_id).map(|(_, r)| (*r).to_string());
            }
            m
        };
        let racks = [(1, "a"), (2, "b"), (3, "c"), (4, "b"), (5, "a")];
        // Node 5 (rack a, like the drained node 1) holds nothing; node 4 (rack b) is busier.
        let m = with_racks(metadata(&[1, 2, 3, 4, 5], &[&[1, 2, 3], &[4, 3, 1]]), &racks);
        let plan = drain_plan(&m, 1).unwrap();
        let moves: Vec<Vec<u32>> = plan.into_iter().map(|m| m.replicas.unwrap()).collect();
        assert_eq!(moves, vec![vec![2, 3, 5], vec![4, 3, 5]]);
        let m = with_racks(metadata(&[1, 2, 3, 4, 5], &[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3], &[1, 2, 3]]), &racks);
        for mv in balance_plan(&m) {
            let replicas = mv.replicas.unwrap();
            let mut seen: Vec<&str> = replicas.iter().map(|r| rack_of(&m, *r).unwrap()).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 3, "one replica per rack: {replicas:?}");
        }
    }
}
