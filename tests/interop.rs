//! pyarrow and HuggingFace `datasets` load an export with the right types and shapes.
//! `.ci/run` installs both and sets `PRETEXT_REQUIRE_INTEROP=1`, so there this test cannot skip.

mod common;

use std::process::Command;

use common::*;

#[test]
fn python_loads_the_export() {
    let ready = Command::new("python3")
        .args(["-c", "import pyarrow, datasets"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ready {
        assert!(
            std::env::var_os("PRETEXT_REQUIRE_INTEROP").is_none(),
            "pyarrow/datasets are required here but not importable"
        );
        eprintln!("skipped: python3 with pyarrow and datasets is not available (pip install pyarrow datasets)");
        return;
    }
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &documents(400, 8));
    let p = pipeline(
        t.path(),
        "p.yaml",
        "name: i\nsource: { path: data }\ntask: { mlm: { seq_len: 48 } }\nexport: { rows_per_file: 500 }\n",
    );
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let script = repo().join("tests/interop/check_export.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(t.path().join("out"))
        .arg("48")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", t.path().join("hf"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: pyarrow and datasets read"), "{}", stdout(&o));
}
