//! Crash safety of `export`: SIGKILLed at seeded random moments and resumed each time, it ends
//! byte-identical to an uninterrupted export, and a reader listing the directory never sees a
//! part of the dataset before all of it; SIGINT / SIGTERM stop it with 130 / 143, keeping the
//! finished parts for `--resume`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const YAML: &str = "name: k\nsource: { path: data, key_column: id }\ntask: { mlm: { seq_len: 32 } }\nstream: { shuffle: { window_rows: 300 }, epochs: 2 }\nexport: { rows_per_file: 500, row_group_rows: 250 }\n";

fn corpus(dir: &Path) {
    for i in 0..4 {
        write_parquet_groups(&dir.join(format!("data/f{i}.parquet")), &documents(300, 10 + i), 64);
    }
}

/// The corpus and pipeline in `dir`, exported uninterrupted into `full`; how long that took.
fn exported(dir: &Path) -> Duration {
    corpus(dir);
    pipeline(dir, "p.yaml", YAML);
    let started = Instant::now();
    assert!(spawn(dir, "full").wait().unwrap().success());
    started.elapsed()
}

fn spawn(dir: &Path, out: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["export", "p.yaml", "--out", out, "--resume", "--quiet"])
        .current_dir(dir)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What a dataset reader listing `dir` sees: its visible Parquet files.
fn listed(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
        .collect();
    v.sort();
    v
}

/// The parts and the manifest's record of them (file, rows, hash), of a finished export.
fn finished(dir: &Path) -> (Vec<(String, Vec<u8>)>, serde_json::Value) {
    let parts = dir_files(dir).into_iter().filter(|(n, _)| n.starts_with("part-")).collect();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
    let record: Vec<_> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::json!([p["file"], p["rows"], p["bytes"], p["xxh3"]]))
        .collect();
    (parts, serde_json::json!([record, manifest["rows"], manifest["fingerprint"]]))
}

/// A small seeded generator (xorshift64*), so the kill moments are the same on every run.
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn an_export_killed_at_random_moments_resumes_to_identical_bytes() {
    let t = tempdir();
    let took = exported(t.path());
    let (reference, record) = finished(&t.path().join("full"));
    assert!(reference.len() >= 8, "{} parts: too few to interrupt between", reference.len());
    let everything = listed(&t.path().join("full"));

    let mut moments = Moments(0x005e_ed0f_6b11);
    let (mut kills, mut campaigns, mut mid_export) = (0, 0, 0);
    while kills < 12 {
        campaigns += 1;
        let out = t.path().join(format!("cut{campaigns}"));
        let name = format!("cut{campaigns}");
        loop {
            let mut child = spawn(t.path(), &name);
            let at = Instant::now() + took.mul_f64(0.05 + 0.5 * moments.next());
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= at {
                    break None;
                }
                let seen = listed(&out);
                assert!(seen.is_empty() || seen == everything, "a reader sees {seen:?}");
                std::thread::sleep(Duration::from_millis(1));
            };
            match status {
                Some(status) => {
                    let mut err = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                    assert!(status.success(), "{err}");
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL: nothing is cleaned up
                    child.wait().unwrap();
                    kills += 1;
                    // Killed with finished parts to keep: the next run resumes after them.
                    let staged = std::fs::read_dir(out.join(".pretext-partial"))
                        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("part-")))
                        .unwrap_or(false);
                    mid_export += staged as usize;
                    let seen = listed(&out);
                    assert!(seen.is_empty() || seen == everything, "after a kill, a reader sees {seen:?}");
                }
            }
        }
        let (parts, rec) = finished(&out);
        assert!(parts == reference, "campaign {campaigns}: the parts differ from an uninterrupted export");
        assert_eq!(rec, record);
        assert!(!out.join(".pretext-partial").exists());
    }
    eprintln!("{kills} kills in {campaigns} campaign(s), {mid_export} with finished parts kept");
    assert!(mid_export >= 4, "only {mid_export} kills came after a part was finished");
}

#[test]
fn sigint_and_sigterm_stop_an_export_keeping_its_parts() {
    let t = tempdir();
    exported(t.path());
    let (reference, _) = finished(&t.path().join("full"));
    for (signal, code, name) in [(libc::SIGINT, 130, "SIGINT"), (libc::SIGTERM, 143, "SIGTERM")] {
        let out = t.path().join(name);
        let mut child = spawn(t.path(), name);
        // Once two parts are finished.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !out.join(".pretext-partial/part-00001.parquet").exists() {
            assert!(child.try_wait().unwrap().is_none(), "the export ended before the signal");
            assert!(Instant::now() < deadline, "no part appeared");
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: sends a signal to a child process we started and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains(&format!("stopped by {name}")) && err.contains("--resume"), "{err}");
        assert!(listed(&out).is_empty(), "{:?}", listed(&out));
        let mut again = spawn(t.path(), name);
        assert!(again.wait().unwrap().success());
        assert!(finished(&out).0 == reference, "{name}: the resumed export differs");
    }
}

#[test]
fn a_publish_stopped_between_its_renames_is_completed_by_the_next_run() {
    let t = tempdir();
    exported(t.path());
    let full = t.path().join("full");
    // Stopped after staging left the directory for its ready place, before it replaced it.
    let ready = t.path().join(".cut.pretext-ready");
    std::fs::create_dir_all(&ready).unwrap();
    for (name, bytes) in dir_files(&full) {
        std::fs::write(ready.join(&name), bytes).unwrap();
    }
    std::fs::write(ready.join("_progress.json"), b"{}").unwrap();
    let cut = t.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    assert!(listed(&cut).is_empty());
    let o = pretext(&["export", "p.yaml", "--out", "cut", "--resume"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    assert!(dir_files(&cut) == dir_files(&full));
    assert!(!ready.exists());
}

#[test]
fn exports_into_the_working_directory_or_through_a_link_are_published_too() {
    let t = tempdir();
    exported(t.path());
    let (reference, _) = finished(&t.path().join("full"));
    // `--out .` from inside the (empty) output directory.
    let here = t.path().join("here");
    std::fs::create_dir_all(&here).unwrap();
    let o = pretext(&["export", "../p.yaml", "--out", ".", "--quiet"], &here);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(finished(&here).0 == reference);
    // `--out link/`, a symbolic link to an empty directory: the link stays a link.
    std::fs::create_dir_all(t.path().join("real")).unwrap();
    std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
    let o = pretext(&["export", "p.yaml", "--out", "link/", "--quiet"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(t.path().join("link")).unwrap().file_type().is_symlink());
    assert!(finished(&t.path().join("real")).0 == reference);
    assert!(!t.path().join("real/_progress.json").exists() && !t.path().join("here/_progress.json").exists());
}
