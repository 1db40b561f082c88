//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, seeds and what libFuzzer
//! found) through every target: none may panic. Runs on stable in CI; libFuzzer itself
//! runs through `fuzz/` (see fuzz/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus");
    for (name, target) in sluice_fuzz_targets::TARGETS {
        let dir = corpus.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        inputs.sort();
        assert!(inputs.iter().any(|p| p.to_string_lossy().contains("seed-")), "{name}: no seed inputs");
        for input in &inputs {
            let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{name} failed on {}", input.display());
        }
        eprintln!("{name}: {} inputs", inputs.len());
    }
}

/// The seeds reach past the first checks: the native seeds are requests that verify, the
/// batches check, the replication and controller seeds decode.
#[test]
fn the_seeds_are_valid_inputs() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus");
    let seeds = |target: &str| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(corpus.join(target)).expect("the corpus directory") {
            let path = entry.expect("an entry").path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
                out.push(std::fs::read(path).expect("a seed"));
            }
        }
        out
    };
    for seed in seeds("native_frame") {
        let envelope = &seed[8..seed.len().min(8 + u32::from_be_bytes(seed[4..8].try_into().unwrap()) as usize)];
        sluice_schemas::wire::parse_request(envelope).expect("a native seed is a request");
    }
    for seed in seeds("record_batch") {
        for item in sluice_schemas::batch::BatchWalker::new(&seed) {
            let (_, _, batch) = item.expect("a seed batch");
            sluice_schemas::batch::check_batch(batch).expect("a seed batch checks");
        }
    }
    for seed in seeds("replication_message") {
        sluice_replication::wire::decode(&seed).expect("a replication seed decodes");
    }
}
