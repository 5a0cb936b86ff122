//! Bad input, fuzzed: request bodies, `x-portkey-config`, SSE streams and cache-key
//! canonicalisation get seeds from `tests/fuzz/corpus/` mutated at random (bytes flipped,
//! inserted, deleted, duplicated, spliced with another seed, truncated) and arbitrary bytes.
//! None may panic, and each keeps its contract (client errors only, split-independent
//! parsing, stable keys). `cargo fuzz` needs a nightly toolchain, which this project does not
//! use; proptest shrinks a failure to a small input and records it in `proptest-regressions/`.
//! `DEJA_FUZZ_CASES` sets the cases per target (default 50,000: about a second in all here).

use std::path::Path;

use bytes::Bytes;
use deja::cache::key::{cache_keys, canonical};
use deja::portkey::RequestConfig;
use deja::request::ChatRequest;
use deja::stream::assemble::Assembler;
use deja::stream::sse::SseParser;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

/// One edit of a seed: (kind, position, byte).
type Edit = (u8, usize, u8);

fn mutate(seeds: &[Vec<u8>], pick: usize, edits: &[Edit]) -> Vec<u8> {
    let mut data = seeds[pick % seeds.len()].clone();
    for &(kind, at, byte) in edits {
        let at = if data.is_empty() { 0 } else { at % data.len() };
        match kind % 6 {
            0 if !data.is_empty() => data[at] ^= byte | 1,
            1 => data.insert(at, byte),
            2 if !data.is_empty() => {
                let end = (at + usize::from(byte % 16) + 1).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let end = (at + usize::from(byte % 32) + 1).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            4 => {
                let other = &seeds[usize::from(byte) % seeds.len()];
                let from = if other.is_empty() {
                    0
                } else {
                    at % other.len()
                };
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.truncate(at),
        }
    }
    data
}

/// Mutated seeds most of the time, arbitrary bytes the rest.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    let mutated = (
        any::<usize>(),
        prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..8),
    )
        .prop_map(move |(pick, edits)| mutate(&seeds, pick, &edits));
    prop_oneof![4 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..256)]
}

fn runner(target: &str) -> TestRunner {
    let cases = std::env::var("DEJA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50_000);
    let mut config = Config::with_cases(cases);
    config.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::Direct(Box::leak(
            format!("proptest-regressions/fuzz-{target}.txt").into_boxed_str(),
        )),
    ));
    TestRunner::new(config)
}

#[test]
fn request_bodies_are_parsed_or_refused_as_client_errors() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (parsed, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    runner("request")
        .run(&inputs("request"), |bytes| {
            match ChatRequest::parse(Bytes::from(bytes)) {
                Ok(_) => parsed.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    prop_assert!(e.status().is_client_error(), "{e}: {}", e.status());
                    prop_assert!(!e.to_string().is_empty());
                    refused.fetch_add(1, Ordering::Relaxed)
                }
            };
            Ok(())
        })
        .unwrap();
    // The mutations reach both sides of the parser, not only its first check.
    let (parsed, refused) = (parsed.into_inner(), refused.into_inner());
    assert!(
        parsed > 100 && refused > 100,
        "parsed {parsed}, refused {refused}"
    );
}

#[test]
fn portkey_configs_are_parsed_or_refused_with_a_message() {
    runner("config")
        .run(&inputs("config"), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = RequestConfig::parse(Some(&text)) {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn sse_parsing_does_not_depend_on_how_the_bytes_arrive() {
    let strategy = (inputs("sse"), prop::collection::vec(any::<usize>(), 0..6));
    runner("sse")
        .run(&strategy, |(bytes, cuts)| {
            let events = |pieces: &[&[u8]]| {
                let mut parser = SseParser::new(64 * 1024);
                let mut out = Vec::new();
                for piece in pieces {
                    parser.feed(piece, &mut out);
                }
                out
            };
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in at {
                pieces.push(&bytes[from..cut]);
                from = cut;
            }
            pieces.push(&bytes[from..]);
            let whole = events(&[&bytes]);
            let split = events(&pieces);
            prop_assert_eq!(whole.len(), split.len());
            let mut assembler = Assembler::new(1 << 20);
            for (a, b) in whole.iter().zip(&split) {
                prop_assert_eq!(&a.data, &b.data);
                prop_assert_eq!(&a.event, &b.event);
                assembler.push(a);
            }
            if let Some(completion) = assembler.finish() {
                prop_assert_eq!(&completion["object"], "chat.completion");
                prop_assert!(completion["choices"].is_array());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn cache_keys_survive_any_json_and_its_canonical_form() {
    runner("key")
        .run(&inputs("key"), |bytes| {
            let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
                return Ok(());
            };
            let keys = cache_keys("ns", "default", &body);
            let again: Value = serde_json::from_str(&canonical(&body)).unwrap();
            prop_assert_eq!(keys, cache_keys("ns", "default", &again));
            Ok(())
        })
        .unwrap();
}
