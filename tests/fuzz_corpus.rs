//! Replays the fuzzers' committed corpora (`fuzz/corpus/`, `fuzz/seeds/`)
//! through the same entry points as the fuzz targets, on stable Rust: every
//! input must be answered (an error is fine) without a panic. Crashes the
//! fuzzers found are in the corpora as regression inputs.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for {target} under {}", root.display());
}

#[test]
fn the_uapi_parser_corpus_replays_without_a_panic() {
    replay("uapi_parse", wghook::fuzzing::uapi_parse);
}

#[test]
fn the_netlink_decoder_corpus_replays_without_a_panic() {
    replay("netlink_decode", wghook::fuzzing::netlink_decode);
}

#[test]
fn the_configuration_corpus_replays_without_a_panic() {
    replay("config", wghook::fuzzing::config);
}

#[test]
fn the_scenario_corpus_replays_without_a_panic() {
    replay("scenario", wghook::fuzzing::scenario);
}
