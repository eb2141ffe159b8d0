//! Balanced assignment with the fewest moves: counts per node differ by at most one, and every
//! configuration whose current owner is still eligible stays where it is unless that owner has
//! more than its share.

use std::collections::{BTreeMap, BTreeSet};

use plume_transport::NodeId;

/// Assign `configs` to `nodes`, keeping `current` owners where the balance allows.
///
/// The result is deterministic (it depends on the sorted ids only) and optimal in moves: a
/// node keeps `min(kept, cap)` of its configurations, where the `m % n` larger caps go to the
/// nodes that currently hold the most, so no other balanced assignment keeps more in place.
pub fn assign(
    nodes: &BTreeSet<NodeId>,
    configs: &BTreeSet<String>,
    current: &BTreeMap<String, NodeId>,
) -> BTreeMap<String, NodeId> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    // What each eligible node holds now, among the configurations that still exist.
    let mut kept: BTreeMap<NodeId, Vec<&String>> = nodes.iter().map(|n| (*n, Vec::new())).collect();
    for (config, owner) in current {
        if configs.contains(config)
            && let Some(list) = kept.get_mut(owner)
        {
            list.push(config);
        }
    }
    let base = configs.len() / nodes.len();
    let extra = configs.len() % nodes.len();
    // The larger caps go to the nodes that hold the most (ties: the smaller id).
    let mut order: Vec<NodeId> = nodes.iter().copied().collect();
    order.sort_by(|a, b| kept[b].len().cmp(&kept[a].len()).then(a.cmp(b)));
    let caps: BTreeMap<NodeId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, base + usize::from(i < extra)))
        .collect();
    let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (node, list) in &kept {
        // `list` is in config order (from the sorted map): the first ones stay.
        for config in list.iter().take(caps[node]) {
            out.insert((*config).clone(), *node);
        }
        counts.insert(*node, list.len().min(caps[node]));
    }
    for config in configs {
        if out.contains_key(config) {
            continue;
        }
        // The node furthest below its cap (ties: the smaller id).
        let target = order
            .iter()
            .filter(|n| counts[*n] < caps[*n])
            .min_by(|a, b| counts[*a].cmp(&counts[*b]).then(a.cmp(b)))
            .copied();
        if let Some(node) = target {
            out.insert(config.clone(), node);
            if let Some(c) = counts.get_mut(&node) {
                *c += 1;
            }
        }
    }
    out
}

/// Move every configuration assigned to a node that refuses it (`refused`: node → the ids it
/// gave up) to the node with the fewest configurations that does not refuse it (ties: the
/// smaller id); a configuration every node refuses is left unassigned. The counts may then
/// differ by more than one, by at most the number of refused configurations.
pub fn avoid_refused(
    assignment: &mut BTreeMap<String, NodeId>,
    nodes: &BTreeSet<NodeId>,
    refused: &BTreeMap<NodeId, &BTreeSet<String>>,
) {
    let refuses = |n: &NodeId, c: &String| refused.get(n).is_some_and(|r| r.contains(c));
    let misplaced: Vec<String> = assignment
        .iter()
        .filter(|(c, n)| refuses(n, c))
        .map(|(c, _)| c.clone())
        .collect();
    for config in misplaced {
        assignment.remove(&config);
        let mut counts: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
        for n in assignment.values() {
            if let Some(k) = counts.get_mut(n) {
                *k += 1;
            }
        }
        let target = counts
            .iter()
            .filter(|(n, _)| !refuses(n, &config))
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(n, _)| *n);
        if let Some(node) = target {
            assignment.insert(config, node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128) -> BTreeSet<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn configs(n: usize) -> BTreeSet<String> {
        (1..=n).map(|i| format!("{i:03}")).collect()
    }

    fn counts(a: &BTreeMap<String, NodeId>) -> Vec<usize> {
        let mut per: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in a.values() {
            *per.entry(*n).or_default() += 1;
        }
        let mut v: Vec<usize> = per.into_values().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    fn moves(before: &BTreeMap<String, NodeId>, after: &BTreeMap<String, NodeId>) -> usize {
        after
            .iter()
            .filter(|(c, n)| before.get(*c).is_some_and(|b| b != *n))
            .count()
    }

    #[test]
    fn seven_on_three_is_three_two_two() {
        let a = assign(&ids(3), &configs(7), &BTreeMap::new());
        assert_eq!(a.len(), 7);
        assert_eq!(counts(&a), vec![3, 2, 2]);
    }

    #[test]
    fn a_lost_node_moves_only_its_own() {
        let before = assign(&ids(3), &configs(7), &BTreeMap::new());
        let lost = NodeId(1);
        let after = assign(&[NodeId(2), NodeId(3)].into(), &configs(7), &before);
        assert_eq!(counts(&after), vec![4, 3]);
        // Only the lost node's configurations moved.
        for (c, n) in &before {
            if *n != lost {
                assert_eq!(after[c], *n, "{c} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn a_new_node_takes_the_fewest() {
        let two: BTreeSet<NodeId> = [NodeId(2), NodeId(3)].into();
        let before = assign(&two, &configs(7), &BTreeMap::new());
        let after = assign(&ids(3), &configs(7), &before);
        assert_eq!(counts(&after), vec![3, 2, 2]);
        // 4/3 → 3/2/2: exactly two configurations move (the minimum).
        assert_eq!(moves(&before, &after), 2);
    }

    #[test]
    fn removed_configs_vanish_and_new_ones_land_on_the_lightest() {
        let before = assign(&ids(3), &configs(6), &BTreeMap::new());
        let mut cfgs = configs(6);
        cfgs.remove("001");
        cfgs.insert("100".into());
        let after = assign(&ids(3), &cfgs, &before);
        assert!(!after.contains_key("001"));
        assert_eq!(after["100"], before["001"]);
        assert_eq!(moves(&before, &after), 0);
    }

    #[test]
    fn balanced_and_minimal_for_many_shapes() {
        for n in 1..6u128 {
            for m in 0..20usize {
                for seed in 0..4u128 {
                    // A skewed current assignment over n + 1 nodes (one of them gone).
                    let current: BTreeMap<String, NodeId> = configs(m)
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| (c, NodeId((i as u128 * (seed + 1)) % (n + 1) + 1)))
                        .collect();
                    let nodes = ids(n);
                    let a = assign(&nodes, &configs(m), &current);
                    assert_eq!(a.len(), m);
                    let c = counts(&a);
                    let (max, min) = (
                        c.first().copied().unwrap_or(0),
                        c.last().copied().unwrap_or(0),
                    );
                    let min = if c.len() < n as usize { 0 } else { min };
                    assert!(max - min <= 1, "unbalanced {c:?}");
                    // Lower bound on moves: configurations of eligible owners over their cap.
                    let mut held: BTreeMap<NodeId, usize> = BTreeMap::new();
                    for o in current.values().filter(|o| nodes.contains(o)) {
                        *held.entry(*o).or_default() += 1;
                    }
                    let mut h: Vec<usize> = held.into_values().collect();
                    h.sort_unstable_by(|a, b| b.cmp(a));
                    let (base, extra) = (m / n as usize, m % n as usize);
                    // Configurations of a node no longer eligible must move too.
                    let orphans = current.values().filter(|o| !nodes.contains(o)).count();
                    let bound: usize = orphans
                        + h.iter()
                            .enumerate()
                            .map(|(i, k)| k.saturating_sub(base + usize::from(i < extra)))
                            .sum::<usize>();
                    assert_eq!(moves(&current, &a), bound, "n={n} m={m} seed={seed}");
                }
            }
        }
    }

    #[test]
    fn refused_configs_go_to_the_lightest_node_that_takes_them() {
        let nodes = ids(3);
        let mut a = assign(&nodes, &configs(7), &BTreeMap::new());
        let before = a.clone();
        // Node 1 refuses one of its own; node 2 refuses it too.
        let mine: Vec<String> = a
            .iter()
            .filter(|(_, n)| **n == NodeId(1))
            .map(|(c, _)| c.clone())
            .collect();
        let bad = mine[0].clone();
        let set: BTreeSet<String> = [bad.clone()].into();
        let refused: BTreeMap<NodeId, &BTreeSet<String>> =
            [(NodeId(1), &set), (NodeId(2), &set)].into();
        avoid_refused(&mut a, &nodes, &refused);
        assert_eq!(a.get(&bad), Some(&NodeId(3)));
        // Only the refused one moved.
        assert_eq!(moves(&before, &a), 1);
        assert_eq!(a.len(), 7);
        // Refused everywhere: nobody runs it.
        let refused: BTreeMap<NodeId, &BTreeSet<String>> =
            nodes.iter().map(|n| (*n, &set)).collect();
        avoid_refused(&mut a, &nodes, &refused);
        assert!(!a.contains_key(&bad));
        assert_eq!(a.len(), 6);
    }
}
