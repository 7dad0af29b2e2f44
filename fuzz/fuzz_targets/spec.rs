//! Any text as a pipeline file (and a `--set` override cut from it): a pipeline or spec
//! errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, set) = text.split_once('\u{0}').unwrap_or((text, ""));
    let sets: Vec<String> = if set.contains('=') { vec![set.to_string()] } else { Vec::new() };
    if let Err(errors) = pretext::spec::load_str(file, "p.yaml", std::path::PathBuf::from("."), &sets) {
        assert!(!errors.to_string().is_empty());
    }
});
