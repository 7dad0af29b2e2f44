//! Writes the built-in quickstart corpus: a small hive-partitioned Parquet dataset of synthetic
//! English-like documents, generated from word lists written for this project (no third-party
//! text). Deterministic: the same files every run.
//!
//! ```text
//! cargo run --release --example gen_quickstart -- data/quickstart
//! ```

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const TOPICS: &[(&str, &[&str], &[&str])] = &[
    (
        "science",
        &[
            "cell",
            "atom",
            "planet",
            "signal",
            "sample",
            "crystal",
            "enzyme",
            "orbit",
            "field",
            "wave",
            "model",
            "measurement",
        ],
        &["absorbs", "emits", "divides", "rotates", "binds", "predicts", "cools", "reflects", "accelerates", "decays"],
    ),
    (
        "cooking",
        &[
            "onion", "sauce", "oven", "dough", "pepper", "broth", "skillet", "garlic", "butter", "recipe", "lemon",
            "spice",
        ],
        &["simmers", "browns", "thickens", "rises", "softens", "melts", "seasons", "roasts", "blends", "rests"],
    ),
    (
        "travel",
        &[
            "train", "harbour", "mountain", "valley", "bridge", "market", "station", "village", "river", "road", "map",
            "ferry",
        ],
        &["crosses", "climbs", "reaches", "follows", "leaves", "circles", "joins", "passes", "enters", "overlooks"],
    ),
];
const ADJECTIVES: &[&str] = &[
    "small",
    "bright",
    "quiet",
    "old",
    "narrow",
    "warm",
    "distant",
    "careful",
    "heavy",
    "simple",
    "green",
    "slow",
    "sudden",
    "remarkable",
    "ordinary",
    "hidden",
];
const DETERMINERS: &[&str] = &["the", "a", "every", "one", "this", "that"];
const CONNECTIVES: &[&str] = &["because", "while", "although", "after", "before", "and then", "so"];
const ADVERBS: &[&str] = &["slowly", "again", "quickly", "at dawn", "without warning", "in the evening", "twice"];

fn pick<'a>(rng: &mut impl Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn clause(rng: &mut impl Rng, nouns: &[&str], verbs: &[&str]) -> String {
    let mut s = format!("{} {} {}", pick(rng, DETERMINERS), pick(rng, ADJECTIVES), pick(rng, nouns));
    s.push_str(&format!(" {} {} {}", pick(rng, verbs), pick(rng, DETERMINERS), pick(rng, nouns)));
    if rng.random_bool(0.4) {
        s.push(' ');
        s.push_str(pick(rng, ADVERBS));
    }
    s
}

fn sentence(rng: &mut impl Rng, nouns: &[&str], verbs: &[&str]) -> String {
    let mut s = clause(rng, nouns, verbs);
    if rng.random_bool(0.5) {
        s = format!("{s} {} {}", pick(rng, CONNECTIVES), clause(rng, nouns, verbs));
    }
    let mut c = s.chars();
    let first = c.next().map(|f| f.to_uppercase().collect::<String>()).unwrap_or_default();
    format!("{first}{}.", c.as_str())
}

fn document(rng: &mut impl Rng, nouns: &[&str], verbs: &[&str]) -> String {
    // Mostly short documents, some long ones: both padding and packing paths get exercised.
    let sentences = if rng.random_bool(0.1) { rng.random_range(20..80) } else { rng.random_range(1..8) };
    (0..sentences).map(|_| sentence(rng, nouns, verbs)).collect::<Vec<_>>().join(" ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "data/quickstart".into());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2024);
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("text", DataType::Utf8, true)]));
    let mut next_id = 0i64;
    for (split, docs) in [("train", 900), ("valid", 100)] {
        for (topic, nouns, verbs) in TOPICS {
            let dir = format!("{out}/split={split}/topic={topic}");
            std::fs::create_dir_all(&dir)?;
            let mut ids = Vec::new();
            let mut texts: Vec<Option<String>> = Vec::new();
            for i in 0..docs {
                ids.push(next_id);
                next_id += 1;
                // A few null and blank rows, as real tables have: pretext skips and counts them.
                texts.push(match i % 97 {
                    13 => None,
                    41 => Some("   ".into()),
                    _ => Some(document(&mut rng, nouns, verbs)),
                });
            }
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(texts))],
            )?;
            let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(9)?)).build();
            let file = std::fs::File::create(format!("{dir}/part-0.parquet"))?;
            let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
            w.write(&batch)?;
            w.close()?;
        }
    }
    eprintln!("wrote {next_id} documents under `{out}`");
    Ok(())
}
