//! pyarrow and HuggingFace `datasets` load an export with the right types and shapes.
//! `.ci/run` installs both and sets `PRETEXT_REQUIRE_INTEROP=1`, so there this test cannot skip.

mod common;

use std::process::Command;

use common::*;

/// Whether python3 has pyarrow and datasets; where CI requires them, their absence fails.
fn python_ready() -> bool {
    let ready = Command::new("python3")
        .args(["-c", "import pyarrow, datasets, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ready {
        assert!(
            std::env::var_os("PRETEXT_REQUIRE_INTEROP").is_none(),
            "pyarrow/datasets are required here but not importable"
        );
        eprintln!("skipped: python3 with pyarrow and datasets is not available (pip install pyarrow datasets)");
    }
    ready
}

/// Runs python3 offline with `args`, its HuggingFace cache in `dir`.
fn python(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf"))
        .output()
        .unwrap()
}

#[test]
fn python_loads_the_export() {
    if !python_ready() {
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
    let out = t.path().join("out");
    let o = python(t.path(), &[script.as_os_str(), out.as_os_str(), "48".as_ref()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: pyarrow and datasets read"), "{}", stdout(&o));
}

/// An image export (MAE: float pixels, bool masks, int32 ids) loads in `datasets` with its
/// fixed-length features and reshapes to `(channels, size, size)` images.
#[test]
fn python_loads_an_image_export() {
    if !python_ready() {
        return;
    }
    use std::sync::Arc;
    let t = tempdir();
    let (n, s) = (12usize, 16usize);
    let item = Arc::new(arrow::datatypes::Field::new("item", arrow::datatypes::DataType::UInt8, false));
    let values: Vec<u8> = (0..n * 3 * s * s).map(|i| (i * 31 % 251) as u8).collect();
    let pixels = arrow::array::FixedSizeListArray::new(
        item.clone(),
        (3 * s * s) as i32,
        Arc::new(arrow::array::UInt8Array::from(values)),
        None,
    );
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new(
            "pixels",
            arrow::datatypes::DataType::FixedSizeList(item, (3 * s * s) as i32),
            false,
        ),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow::array::Int64Array::from((0..n as i64).collect::<Vec<_>>())), Arc::new(pixels)],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(t.path().join("px.parquet")).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let p = pipeline(
        t.path(),
        "p.yaml",
        "name: i\nsource: { path: px.parquet, key_column: id, image_column: pixels, image_shape: [3, 16, 16] }\ntask: { mae: { image: { size: 16 }, patch_size: 4 } }\n",
    );
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let script = r#"
import glob, sys
import numpy as np
from datasets import Sequence, Value, load_dataset
files = sorted(glob.glob(sys.argv[1] + "/part-*.parquet"))
ds = load_dataset("parquet", data_files=files, split="train")
f = ds.features
assert f["pixel_values"].feature == Value("float32") and f["pixel_values"].length == 768, f
assert f["mask"].feature == Value("bool") and f["mask"].length == 16, f
assert f["ids_restore"].feature == Value("int32") and f["ids_restore"].length == 16, f
b = ds.with_format("numpy")[:4]
imgs = b["pixel_values"].reshape(-1, 3, 16, 16)
assert imgs.shape == (4, 3, 16, 16) and imgs.dtype == np.float32
assert (b["mask"].sum(axis=1) == 12).all()
print("ok: image export", len(ds))
"#;
    let out = t.path().join("out");
    let o = python(t.path(), &["-c".as_ref(), script.as_ref(), out.as_os_str()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: image export 12"), "{}", stdout(&o));
}
