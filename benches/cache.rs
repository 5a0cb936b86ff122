//! Criterion benches of the cache's parts: key canonicalisation, the guards on a candidate pair,
//! embedding one prompt and a
//! batch of 32 with the real default model, and `SemanticIndex` search at 10k and 100k entries
//! (with recall@1 against brute force printed beside it). Needs `models/fetch.sh` to have run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails by panicking"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use deja::cache::guard::{Guard, refuse};
use deja::cache::index::{NewEntry, SemanticIndex};
use deja::cache::key::cache_keys;
use deja::cache::verifier::{Side, Verifier};
use deja::config::EmbeddingConfig;
use deja::embedding::onnx::OnnxEmbedder;
use deja::embedding::{Embedder, TokenStates, normalize};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const DIM: usize = 384;
const SIZES: [usize; 2] = [10_000, 100_000];
const QUERIES: usize = 500;
const SEED: u64 = 42;

fn keys(c: &mut Criterion) {
    let body = json!({
        "model": "yi-lightning", "temperature": 0.3, "max_tokens": 512,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for an online shop."},
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": "Could you give me the order number?"},
            {"role": "user", "content": "It is 12345, placed last Tuesday."}
        ]
    });
    c.bench_function("key canonicalisation (4 messages)", |b| {
        b.iter(|| cache_keys(black_box("ns"), "default", black_box(&body)))
    });
}

fn guards(c: &mut Criterion) {
    deja::cache::guard::warm();
    let all = Guard::all();
    for (name, a, b) in [
        (
            "guards, Chinese pair",
            "退款需要多长时间到账？",
            "退款一般几天能到账？",
        ),
        (
            "guards, English pair",
            "How do I cancel my subscription?",
            "How can I cancel my subscription?",
        ),
    ] {
        c.bench_function(name, |bench| {
            bench.iter(|| refuse(&all, black_box(a), black_box(b)))
        });
    }
}

/// What the verifier adds to a semantic hit's CPU: decoding the stored prompt's word-piece
/// states (as read from Redis), the features, and the trees.
fn verifier(c: &mut Criterion) {
    let config = EmbeddingConfig::default();
    let embedder = OnnxEmbedder::load(&config).expect("run models/fetch.sh");
    let verifier = Verifier::load(&config.verifier_path(), config.model.slug())
        .expect("models/verifier weights");
    for (name, a, b) in [
        (
            "verifier, Chinese pair",
            "退款需要多长时间到账？",
            "退款一般几天能到账？",
        ),
        (
            "verifier, English pair",
            "I ordered a lamp last week and it arrived broken. How do I get a refund?",
            "My lamp came broken, how can I get my money back?",
        ),
    ] {
        let e = embedder.embed_blocking(&[a, b]).unwrap();
        let stored_bytes = e[1].tokens.to_bytes();
        c.bench_function(name, |bench| {
            bench.iter(|| {
                let stored = TokenStates::from_bytes(black_box(&stored_bytes)).unwrap();
                verifier.score(
                    &Side {
                        text: a,
                        vector: &e[0].vector,
                        tokens: &e[0].tokens,
                    },
                    &Side {
                        text: b,
                        vector: &e[1].vector,
                        tokens: &stored,
                    },
                )
            })
        });
    }
}

fn embedding(c: &mut Criterion) {
    let embedder = OnnxEmbedder::load(&EmbeddingConfig::default()).expect("run models/fetch.sh");
    let mut group = c.benchmark_group("embedding multilingual-e5-small");
    group.sample_size(50);
    group.bench_function("one short prompt", |b| {
        b.iter(|| {
            embedder
                .embed_blocking(black_box(&["怎么申请退款？"]))
                .unwrap()
        })
    });
    let batch: Vec<String> = (0..32)
        .map(|i| format!("How do I get a refund for order {i}?"))
        .collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    group.bench_function("batch of 32", |b| {
        b.iter(|| embedder.embed_blocking(black_box(&batch)).unwrap())
    });
    group.finish();
}

fn unit(rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
    normalize(&mut v);
    v
}

/// Vectors around `CLUSTERS` centres, as embeddings of a service's questions bunch by topic;
/// uniform random vectors are the graph's worst case and are measured too.
const CLUSTERS: usize = 200;
const CLUSTER_SPREAD: f32 = 0.08;

fn clustered(rng: &mut StdRng, size: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..CLUSTERS).map(|_| unit(rng)).collect();
    (0..size)
        .map(|i| {
            let mut v: Vec<f32> = centres[i % CLUSTERS]
                .iter()
                .map(|x| x + (rng.random::<f32>() - 0.5) * CLUSTER_SPREAD)
                .collect();
            normalize(&mut v);
            v
        })
        .collect()
}

fn search(c: &mut Criterion) {
    let mut group = c.benchmark_group("semantic index search");
    type Make = fn(&mut StdRng, usize) -> Vec<Vec<f32>>;
    let kinds: [(&str, Make); 2] = [
        ("uniform", |rng, size| {
            (0..size).map(|_| unit(rng)).collect()
        }),
        ("clustered", clustered),
    ];
    for (size, (kind, make)) in SIZES
        .into_iter()
        .flat_map(|s| kinds.into_iter().map(move |k| (s, k)))
    {
        let mut rng = StdRng::seed_from_u64(SEED);
        let vectors: Vec<Vec<f32>> = make(&mut rng, size);
        let index = SemanticIndex::new(size);
        let started = Instant::now();
        // Two writers, as two concurrent misses would: graph inserts run side by side.
        std::thread::scope(|scope| {
            for half in vectors.chunks(size.div_ceil(2)).enumerate() {
                let index = &index;
                scope.spawn(move || {
                    let (h, chunk) = half;
                    for (j, v) in chunk.iter().enumerate() {
                        index.insert(NewEntry {
                            id: (h * size.div_ceil(2) + j).to_string(),
                            partition: 1,
                            vector: v.clone(),
                            prompt: String::new(),
                            expires_at_ms: u64::MAX,
                            body: Some(Bytes::new()),
                            states: None,
                            total_tokens: 0,
                        });
                    }
                });
            }
        });
        let built = started.elapsed();
        // Queries near stored vectors, as paraphrases are; the truth is the brute-force best.
        let queries: Vec<Vec<f32>> = (0..QUERIES)
            .map(|_| {
                let base = &vectors[rng.random_range(0..size)];
                let mut q: Vec<f32> = base
                    .iter()
                    .map(|x| x + (rng.random::<f32>() - 0.5) * 0.05)
                    .collect();
                normalize(&mut q);
                q
            })
            .collect();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let correct = queries
            .iter()
            .filter(|q| {
                let truth = (0..size)
                    .max_by(|&a, &b| dot(q, &vectors[a]).total_cmp(&dot(q, &vectors[b])))
                    .unwrap();
                index
                    .search(1, q, 0.0, 0)
                    .is_some_and(|f| f.id == truth.to_string())
            })
            .count();
        println!(
            "{kind} index of {size}: built in {:.1}s, recall@1 against brute force {:.3} ({QUERIES} queries)",
            built.as_secs_f64(),
            correct as f64 / QUERIES as f64
        );
        let mut i = 0;
        group.bench_function(format!("{size} {kind} entries"), |b| {
            b.iter(|| {
                i = (i + 1) % QUERIES;
                index.search(1, black_box(&queries[i]), 0.0, 0)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = keys, guards, verifier, embedding, search
}
criterion_main!(benches);
