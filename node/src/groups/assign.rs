//! Partition assignment strategies, as Kafka's assignors compute them: `range`,
//! `roundrobin` and `cooperative-sticky`. Pure functions: members (sorted by id) with
//! their subscriptions and what they owned, partition counts per topic, out comes each
//! member's partitions. Every partition of a subscribed topic goes to exactly one member
//! subscribed to it.

use std::collections::{BTreeMap, BTreeSet};

/// A (topic, partition).
pub type Tp = sluice_schemas::TopicPartition;

/// The strategies a group may use.
pub const STRATEGIES: &[&str] = &["range", "roundrobin", "cooperative-sticky"];

/// A member as the assignors see it.
#[derive(Clone, Debug)]
pub struct MemberSubscription {
    pub member_id: String,
    pub topics: BTreeSet<String>,
    /// Its assignment before this rebalance (used by `cooperative-sticky`).
    pub owned: Vec<Tp>,
}

/// Assigns `partitions` (topic -> count) to `members` with `strategy`.
#[must_use]
pub fn assign(
    strategy: &str,
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<Tp>> {
    let mut members: Vec<&MemberSubscription> = members.iter().collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let mut out: BTreeMap<String, Vec<Tp>> = members.iter().map(|m| (m.member_id.clone(), Vec::new())).collect();
    match strategy {
        "roundrobin" => round_robin(&members, partitions, &mut out),
        "cooperative-sticky" => sticky(&members, partitions, &mut out),
        _ => range(&members, partitions, &mut out),
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}

/// Per topic: the subscribed members in id order each take a contiguous range; the first
/// `count % members` take one more.
fn range(members: &[&MemberSubscription], partitions: &BTreeMap<String, u32>, out: &mut BTreeMap<String, Vec<Tp>>) {
    for (topic, &count) in partitions {
        let subscribed: Vec<&&MemberSubscription> = members.iter().filter(|m| m.topics.contains(topic)).collect();
        if subscribed.is_empty() {
            continue;
        }
        let n = subscribed.len() as u32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribed.iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            if let Some(list) = out.get_mut(&m.member_id) {
                list.extend((next..next + take).map(|p| Tp::new(topic.as_str(), p)));
            }
            next += take;
        }
    }
}

/// Every partition of every topic in (topic, partition) order, dealt in turn to the
/// members subscribed to its topic.
fn round_robin(
    members: &[&MemberSubscription],
    partitions: &BTreeMap<String, u32>,
    out: &mut BTreeMap<String, Vec<Tp>>,
) {
    if members.is_empty() {
        return;
    }
    let mut turn = 0usize;
    for (topic, &count) in partitions {
        for p in 0..count {
            for _ in 0..members.len() {
                let m = members[turn % members.len()];
                turn += 1;
                if m.topics.contains(topic) {
                    if let Some(list) = out.get_mut(&m.member_id) {
                        list.push(Tp::new(topic.as_str(), p));
                    }
                    break;
                }
            }
        }
    }
}

/// Balanced like round-robin, but every member keeps what it owned as far as balance
/// allows, so a rebalance moves as few partitions as it can (the members are told only
/// of the partitions they lose and gain).
fn sticky(members: &[&MemberSubscription], partitions: &BTreeMap<String, u32>, out: &mut BTreeMap<String, Vec<Tp>>) {
    let all: Vec<Tp> = partitions.iter().flat_map(|(t, &c)| (0..c).map(move |p| Tp::new(t.as_str(), p))).collect();
    let eligible = |tp: &Tp| members.iter().filter(|m| m.topics.contains(&tp.topic)).count();
    let assignable = all.iter().filter(|tp| eligible(tp) > 0).count();
    if members.is_empty() || assignable == 0 {
        return;
    }
    let quota_floor = assignable / members.len();
    let with_extra = assignable % members.len();
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    let mut extras_used = 0;
    // Keep owned partitions, up to each member's quota.
    for m in members {
        let mut kept = Vec::new();
        for tp in &m.owned {
            let valid = partitions.get(&tp.topic).is_some_and(|&c| tp.partition < c) && m.topics.contains(&tp.topic);
            if valid && !taken.contains(tp) && kept.len() < quota_floor {
                kept.push(tp.clone());
            }
        }
        if let Some(tp) = m.owned.iter().find(|tp| {
            partitions.get(&tp.topic).is_some_and(|&c| tp.partition < c)
                && m.topics.contains(&tp.topic)
                && !taken.contains(*tp)
                && !kept.contains(tp)
        }) {
            if extras_used < with_extra {
                kept.push(tp.clone());
                extras_used += 1;
            }
        }
        for tp in &kept {
            taken.insert(tp.clone());
        }
        if let Some(list) = out.get_mut(&m.member_id) {
            list.extend(kept);
        }
    }
    // Hand the rest to the least-loaded subscribed member.
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let best = members
            .iter()
            .filter(|m| m.topics.contains(&tp.topic))
            .min_by_key(|m| (out.get(&m.member_id).map_or(0, Vec::len), m.member_id.clone()));
        if let Some(m) = best {
            if let Some(list) = out.get_mut(&m.member_id) {
                list.push(tp.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, u32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| Tp::new(*t, *p)).collect(),
        }
    }

    fn parts(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    fn check_complete(out: &BTreeMap<String, Vec<Tp>>, partitions: &BTreeMap<String, u32>) {
        let mut seen: Vec<Tp> = out.values().flatten().cloned().collect();
        seen.sort();
        let all: Vec<Tp> = partitions.iter().flat_map(|(t, &c)| (0..c).map(move |p| Tp::new(t.as_str(), p))).collect();
        assert_eq!(seen, all, "every partition exactly once");
    }

    #[test]
    fn range_gives_contiguous_ranges_with_the_extras_first() {
        let members = [member("a", &["t"], &[]), member("b", &["t"], &[]), member("c", &["t"], &[])];
        let partitions = parts(&[("t", 7)]);
        let out = assign("range", &members, &partitions);
        check_complete(&out, &partitions);
        assert_eq!(out["a"].iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(out["b"].iter().map(|p| p.partition).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(out["c"].iter().map(|p| p.partition).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn six_partitions_over_three_members_give_two_each_in_every_strategy() {
        let members = [member("a", &["t"], &[]), member("b", &["t"], &[]), member("c", &["t"], &[])];
        let partitions = parts(&[("t", 6)]);
        for s in STRATEGIES {
            let out = assign(s, &members, &partitions);
            check_complete(&out, &partitions);
            assert!(out.values().all(|l| l.len() == 2), "{s}: {out:?}");
        }
    }

    #[test]
    fn roundrobin_respects_subscriptions() {
        let members = [member("a", &["x", "y"], &[]), member("b", &["y"], &[])];
        let partitions = parts(&[("x", 2), ("y", 2)]);
        let out = assign("roundrobin", &members, &partitions);
        check_complete(&out, &partitions);
        assert!(out["b"].iter().all(|tp| tp.topic == "y"));
    }

    #[test]
    fn sticky_moves_only_what_balance_requires_when_a_member_leaves_or_joins() {
        let partitions = parts(&[("t", 6)]);
        let first = assign(
            "cooperative-sticky",
            &[member("a", &["t"], &[]), member("b", &["t"], &[]), member("c", &["t"], &[])],
            &partitions,
        );
        // c leaves: a and b keep theirs and share c's.
        let owned = |id: &str| first[id].iter().map(|tp| (tp.topic.as_str(), tp.partition)).collect::<Vec<_>>();
        let second = assign(
            "cooperative-sticky",
            &[member("a", &["t"], &owned("a")), member("b", &["t"], &owned("b"))],
            &partitions,
        );
        check_complete(&second, &partitions);
        for id in ["a", "b"] {
            assert!(first[id].iter().all(|tp| second[id].contains(tp)), "{id} kept its partitions");
            assert_eq!(second[id].len(), 3);
        }
        // d joins: each of a and b gives up exactly one.
        let owned2 = |id: &str| second[id].iter().map(|tp| (tp.topic.as_str(), tp.partition)).collect::<Vec<_>>();
        let third = assign(
            "cooperative-sticky",
            &[member("a", &["t"], &owned2("a")), member("b", &["t"], &owned2("b")), member("d", &["t"], &[])],
            &partitions,
        );
        check_complete(&third, &partitions);
        assert!(third.values().all(|l| l.len() == 2));
        for id in ["a", "b"] {
            assert_eq!(third[id].iter().filter(|tp| second[id].contains(tp)).count(), 2);
        }
    }
}
