use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const DIM: usize = 384;

fn unit(rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
    crate::embedding::normalize(&mut v);
    v
}

fn near(v: &[f32], rng: &mut StdRng, noise: f32) -> Vec<f32> {
    let mut w: Vec<f32> = v
        .iter()
        .map(|x| x + (rng.random::<f32>() - 0.5) * noise)
        .collect();
    crate::embedding::normalize(&mut w);
    w
}

fn entry(id: &str, partition: u128, vector: Vec<f32>) -> NewEntry {
    NewEntry {
        id: id.to_owned(),
        partition,
        vector,
        prompt: format!("question {id}"),
        expires_at_ms: u64::MAX,
        body: Some(Bytes::from(format!("answer {id}"))),
        states: None,
        total_tokens: 3,
    }
}

#[test]
fn finds_the_closest_entry_of_its_own_partition_only() {
    let mut rng = StdRng::seed_from_u64(1);
    let index = SemanticIndex::new(100);
    let a = unit(&mut rng);
    index.insert(entry("a", 1, a.clone()));
    index.insert(entry("b", 1, unit(&mut rng)));
    index.insert(entry("a-elsewhere", 2, a.clone()));
    let q = near(&a, &mut rng, 0.01);
    let found = index.search(1, &q, 0.9, 0).unwrap();
    assert_eq!(found.id, "a");
    assert!(found.similarity > 0.99 && found.similarity <= 1.0);
    assert_eq!(found.body.as_deref(), Some(&b"answer a"[..]));
    assert!(
        index.search(3, &q, 0.0, 0).is_none(),
        "no entry in partition 3"
    );
    assert!(
        index.search(1, &unit(&mut rng), 0.9, 0).is_none(),
        "below the threshold"
    );
}

#[test]
fn expired_and_removed_entries_are_never_served() {
    let mut rng = StdRng::seed_from_u64(2);
    let index = SemanticIndex::new(100);
    let v = unit(&mut rng);
    index.insert(NewEntry {
        expires_at_ms: 1_000,
        ..entry("old", 1, v.clone())
    });
    assert!(index.search(1, &v, 0.9, 999).is_some());
    assert!(
        index.search(1, &v, 0.9, 1_000).is_none(),
        "expired at its expiry time"
    );
    assert_eq!(index.sweep_expired(1_000), vec!["old".to_owned()]);
    assert_eq!(index.len(), 0);

    index.insert(entry("gone", 1, v.clone()));
    assert!(index.remove("gone"));
    assert!(!index.remove("gone"));
    assert!(index.search(1, &v, 0.0, 0).is_none());
}

#[test]
fn inserting_an_id_again_replaces_it() {
    let mut rng = StdRng::seed_from_u64(3);
    let index = SemanticIndex::new(100);
    let v = unit(&mut rng);
    index.insert(entry("k", 1, v.clone()));
    index.insert(NewEntry {
        body: Some(Bytes::from_static(b"new")),
        ..entry("k", 1, v.clone())
    });
    assert_eq!(index.len(), 1);
    assert_eq!(
        index.search(1, &v, 0.9, 0).unwrap().body.as_deref(),
        Some(&b"new"[..])
    );
}

#[test]
fn a_full_index_evicts_the_least_recently_used() {
    let mut rng = StdRng::seed_from_u64(4);
    let index = SemanticIndex::new(100);
    let vectors: Vec<Vec<f32>> = (0..100).map(|_| unit(&mut rng)).collect();
    for (i, v) in vectors.iter().enumerate() {
        index.insert(entry(&format!("e{i}"), 1, v.clone()));
    }
    // Use every entry but e7, so e7 is the least recently used.
    for (i, v) in vectors.iter().enumerate() {
        if i != 7 {
            assert!(index.search(1, v, 0.99, 0).is_some());
        }
    }
    let evicted = index.insert(entry("new", 1, unit(&mut rng)));
    assert_eq!(evicted, vec!["e7".to_owned()]);
    assert_eq!(index.len(), 100);
}

#[test]
fn the_graph_path_has_high_recall_and_survives_compaction() {
    let mut rng = StdRng::seed_from_u64(5);
    let n = 3 * EXACT_SCAN_MAX;
    let index = SemanticIndex::new(n * 2);
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng)).collect();
    for (i, v) in vectors.iter().enumerate() {
        index.insert(entry(&i.to_string(), 9, v.clone()));
    }
    let queries: Vec<(usize, Vec<f32>)> = (0..200)
        .map(|_| {
            let i = rng.random_range(0..n);
            (i, near(&vectors[i], &mut rng, 0.02))
        })
        .collect();
    // Share of `asked` whose stored original is found first.
    let recall = |index: &SemanticIndex, asked: &[&(usize, Vec<f32>)]| {
        let hits = asked
            .iter()
            .filter(|(i, q)| {
                index
                    .search(9, q, 0.0, 0)
                    .is_some_and(|f| f.id == i.to_string())
            })
            .count();
        hits as f32 / asked.len() as f32
    };
    let all: Vec<&(usize, Vec<f32>)> = queries.iter().collect();
    let before = recall(&index, &all);
    assert!(before >= 0.98, "recall@1 {before}");

    for i in 0..n / 2 {
        index.remove(&i.to_string());
    }
    assert!(index.tombstone_ratio() >= 0.49);
    index.compact();
    assert_eq!(index.tombstone_ratio(), 0.0);
    assert_eq!(index.len(), n - n / 2);
    let kept: Vec<&(usize, Vec<f32>)> = queries.iter().filter(|(i, _)| *i >= n / 2).collect();
    let after = recall(&index, &kept);
    assert!(after >= 0.98, "recall after compaction {after}");
    let removed = queries.iter().find(|(i, _)| *i < n / 2).unwrap();
    assert_ne!(
        index.search(9, &removed.1, 0.0, 0).map(|f| f.id),
        Some(removed.0.to_string())
    );
}

#[test]
fn a_large_partition_is_searched_even_when_another_one_is_closer() {
    let mut rng = StdRng::seed_from_u64(6);
    let n = 2 * EXACT_SCAN_MAX;
    let index = SemanticIndex::new(2 * n);
    let mine: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng)).collect();
    let theirs: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng)).collect();
    for i in 0..n {
        index.insert(entry(&format!("mine-{i}"), 1, mine[i].clone()));
        index.insert(entry(&format!("theirs-{i}"), 2, theirs[i].clone()));
    }
    // The query sits on an entry of partition 2: the plain graph search finds only theirs.
    let found = index
        .search(1, &theirs[3], -1.0, 0)
        .expect("partition 1 has entries");
    assert!(found.id.starts_with("mine-"), "{}", found.id);
    assert_eq!(index.search(2, &theirs[3], 0.99, 0).unwrap().id, "theirs-3");
}

proptest! {
    #[test]
    fn similarity_is_within_minus_one_and_one(seed in any::<u64>(), noise in 0.0f32..4.0) {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = unit(&mut rng);
        let b = near(&a, &mut rng, noise);
        let s = similarity(&a, &b);
        prop_assert!((-1.0..=1.0).contains(&s));
        prop_assert!((similarity(&a, &a) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_bulk_insert_finds_what_one_by_one_inserts_find() {
    // Large partitions go through the graph: 3,000 entries in one partition, built in bulk on
    // every core, must be found as well as the same entries inserted one by one.
    let mut rng = StdRng::seed_from_u64(7);
    let vectors: Vec<Vec<f32>> = (0..3000).map(|_| unit(&mut rng)).collect();
    let bulk = SemanticIndex::new(10_000);
    bulk.insert_many(
        vectors
            .iter()
            .enumerate()
            .map(|(i, v)| entry(&i.to_string(), 1, v.clone()))
            .collect(),
    );
    assert_eq!(bulk.len(), 3000);
    let mut found = 0;
    for (i, v) in vectors.iter().enumerate().step_by(30) {
        let q = near(v, &mut rng, 0.02);
        if bulk
            .search(1, &q, 0.9, 0)
            .is_some_and(|f| f.id == i.to_string())
        {
            found += 1;
        }
    }
    assert!(found >= 98, "recall {found}/100");
    // Past max_entries a bulk insert evicts like single inserts do.
    let small = SemanticIndex::new(100);
    small.insert_many(
        (0..150)
            .map(|i| entry(&i.to_string(), 1, unit(&mut rng)))
            .collect(),
    );
    assert!(small.len() <= 100, "{}", small.len());
}
