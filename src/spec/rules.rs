//! The rules a JSON Schema cannot express: combinations of fields, ranges that depend on other
//! fields, and what a task, a source or a model needs of the rest of the pipeline.

use super::*;

/// Rules the schema cannot express: combinations of fields.
pub(super) fn rules(spec: &PipelineSpec) -> Vec<Issue> {
    let mut issues = Vec::new();
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match &spec.task {
        TaskSpec::Mlm(m) => {
            if m.mask_token_prob + m.random_token_prob > 1.0 + 1e-9 {
                issues.push(Issue::at(
                    &p(&["task", "mlm", "random_token_prob"]),
                    format!(
                        "mask_token_prob ({}) + random_token_prob ({}) is more than 1",
                        m.mask_token_prob, m.random_token_prob
                    ),
                    Some(
                        "the two shares split the selected tokens; the rest stay unchanged (HuggingFace: 0.8 and 0.1)"
                            .into(),
                    ),
                ));
            }
        }
        TaskSpec::Span(t) => {
            let min = min_seq_len(t.noise_density, t.mean_noise_span_length);
            if (t.seq_len as usize) < min {
                issues.push(Issue::at(
                    &p(&["task", "span", "seq_len"]),
                    format!(
                        "seq_len {} is too small for span corruption with noise_density {} and mean_noise_span_length {}: the minimum is {min}",
                        t.seq_len, t.noise_density, t.mean_noise_span_length
                    ),
                    Some(format!("use `seq_len: {min}` or more (T5 uses 512)")),
                ));
            }
        }
        TaskSpec::ContrastiveText(t) => {
            let augmented = t.crop.is_some() || t.token_dropout > 0.0 || t.mask_prob > 0.0;
            if t.identical && augmented {
                issues.push(Issue::at(
                    &p(&["task", "contrastive_text", "identical"]),
                    "`identical: true` conflicts with `crop`, `token_dropout` and `mask_prob`".into(),
                    Some("SimCSE's recipe uses identical views; drop the augmentations or `identical`".into()),
                ));
            }
            if !t.identical && !augmented {
                issues.push(Issue::at(
                    &p(&["task", "contrastive_text"]),
                    "no view generator: the two views would always be equal".into(),
                    Some("add `crop: {min_tokens: 8, max_tokens: 64}`, `token_dropout: 0.1` or `mask_prob: 0.15`, or say `identical: true` for SimCSE".into()),
                ));
            }
            if let Some(c) = &t.crop {
                if c.min_tokens > c.max_tokens {
                    issues.push(Issue::at(
                        &p(&["task", "contrastive_text", "crop", "min_tokens"]),
                        format!("min_tokens {} is above max_tokens {}", c.min_tokens, c.max_tokens),
                        None,
                    ));
                }
            }
        }
        TaskSpec::Denoise(t) => {
            if t.mask_spans == 0.0 && t.delete == 0.0 && !t.permute_sentences {
                issues.push(Issue::at(
                    &p(&["task", "denoise"]),
                    "no corruption: inputs would equal labels".into(),
                    Some("set `mask_spans` (BART: 0.3), `delete` or `permute_sentences: true`".into()),
                ));
            }
        }
        TaskSpec::Causal(_) => {}
        TaskSpec::ContrastiveImage(t) => {
            image_rules(&t.image, "contrastive_image", &mut issues);
            if let Some(a) = &t.augment {
                let at = |k: &str| p(&["task", "contrastive_image", "augment", k]);
                if let Some(c) = &a.crop {
                    crop_rules(c, at("crop"), &mut issues);
                }
                if let Some(b) = &a.blur {
                    range_rule(b.sigma, 1e-3, 100.0, [at("blur"), p(&["sigma"])].concat(), "sigma", &mut issues);
                }
            }
        }
        TaskSpec::Mae(t) => {
            image_rules(&t.image, "mae", &mut issues);
            crop_rules(&t.crop, p(&["task", "mae", "crop"]), &mut issues);
            if t.image.size % t.patch_size != 0 {
                issues.push(Issue::at(
                    &p(&["task", "mae", "patch_size"]),
                    format!("patch_size {} does not divide image.size {}", t.patch_size, t.image.size),
                    Some("MAE uses 224-pixel images and 16-pixel patches (196 patches)".into()),
                ));
            } else {
                let n = ((t.image.size / t.patch_size) as u64).pow(2);
                let masked = (t.mask_ratio * n as f64).round() as u64;
                if masked == 0 || masked >= n {
                    issues.push(Issue::at(
                        &p(&["task", "mae", "mask_ratio"]),
                        format!("mask_ratio {} of {n} patches masks {masked}: at least one patch must be hidden and one kept", t.mask_ratio),
                        Some("MAE masks 0.75 of the patches; use smaller patches for small images".into()),
                    ));
                }
            }
        }
        TaskSpec::DenoiseImage(t) => {
            image_rules(&t.image, "denoise_image", &mut issues);
            if t.gaussian == 0.0 && t.salt_pepper == 0.0 && t.erase.as_ref().is_none_or(|e| e.p == 0.0) {
                issues.push(Issue::at(
                    &p(&["task", "denoise_image"]),
                    "no corruption: the noisy images would equal the clean ones".into(),
                    Some("set `gaussian: 0.1`, `salt_pepper: 0.05` or `erase: {}`".into()),
                ));
            }
            if let Some(e) = &t.erase {
                let at = p(&["task", "denoise_image", "erase"]);
                range_rule(e.scale, 1e-6, 1.0, [at.clone(), p(&["scale"])].concat(), "scale", &mut issues);
                range_rule(e.ratio, 1e-3, 1e3, [at, p(&["ratio"])].concat(), "ratio", &mut issues);
            }
        }
        TaskSpec::Scarf(t) => table_rules(&t.columns, &t.categorical, "scarf", &mut issues),
        TaskSpec::Vime(t) => table_rules(&t.columns, &t.categorical, "vime", &mut issues),
    }
    if spec.task.input() != TaskInput::Text && !matches!(spec.tokenizer, TokenizerSpec::Bytes(_)) {
        issues.push(Issue::at_key(
            &p(&["tokenizer"]),
            format!("task `{}` reads no text, so it has no use for a tokenizer", spec.task_name()),
            Some("remove the `tokenizer` section".into()),
        ));
    }
    mixture_rules(spec, &mut issues);
    retry_rules(&spec.export.retry, p(&["export", "retry"]), &mut issues);
    for m in spec.members() {
        retry_rules(&m.spec.retry, [m.at.clone(), p(&["retry"])].concat(), &mut issues);
        member_rules(&m, &mut issues);
    }
    if let Some(train) = &spec.train {
        train_rules(spec, train, &mut issues);
    }
    let seq_len = spec.task.seq_len();
    if let Some(w) = spec.stream.shuffle.window_rows() {
        let values = w as u64 * seq_len as u64;
        if values > 1 << 27 {
            issues.push(Issue::at(
                &p(&["stream", "shuffle"]),
                format!("a shuffle window of {w} rows of {seq_len} values (tokens, pixels or features) holds {values} values per column, more than 134,217,728"),
                Some(format!("lower `window_rows` to at most {}", (1u64 << 27) / seq_len as u64)),
            ));
        }
    }
    if let Some(shard) = spec.stream.shard {
        if shard.rank >= shard.world_size {
            issues.push(Issue::at(
                &p(&["stream", "shard", "rank"]),
                format!("rank {} is not below world_size {}", shard.rank, shard.world_size),
                Some("ranks count from 0: use 0 … world_size - 1".into()),
            ));
        }
    }
    issues
}

fn image_rules(image: &ImageInputSpec, task: &str, issues: &mut Vec<Issue>) {
    let at = |k: &str| vec!["task".to_string(), task.to_string(), "image".to_string(), k.to_string()];
    if image.channels == 2 {
        issues.push(Issue::at(&at("channels"), "images have 1 (grey) or 3 (RGB) channels, not 2".into(), None));
    }
    for (name, values) in [("mean", &image.mean), ("std", &image.std)] {
        let Some(v) = values else { continue };
        if v.len() != image.channels as usize {
            issues.push(Issue::at(
                &at(name),
                format!("{} values for {} channel(s)", v.len(), image.channels),
                Some(format!("give one {name} per channel")),
            ));
        } else if name == "std" && v.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            issues.push(Issue::at(&at(name), "every std must be positive".into(), None));
        }
    }
}

fn crop_rules(c: &RandomCropSpec, at: Vec<String>, issues: &mut Vec<Issue>) {
    range_rule(c.scale, 1e-6, 1.0, [at.clone(), vec!["scale".into()]].concat(), "scale", issues);
    range_rule(c.ratio, 1e-3, 1e3, [at, vec!["ratio".into()]].concat(), "ratio", issues);
}

/// A `[lo, hi]` pair with `min ≤ lo ≤ hi ≤ max`.
fn range_rule(v: [f64; 2], min: f64, max: f64, at: Vec<String>, name: &str, issues: &mut Vec<Issue>) {
    if !(v[0] >= min && v[0] <= v[1] && v[1] <= max) {
        issues.push(Issue::at(
            &at,
            format!("{name} [{}, {}] is not a range within [{min}, {max}]", v[0], v[1]),
            Some("write `[low, high]` with low ≤ high".into()),
        ));
    }
}

fn table_rules(columns: &[String], categorical: &[String], task: &str, issues: &mut Vec<Issue>) {
    let at = |k: &str| vec!["task".to_string(), task.to_string(), k.to_string()];
    if columns.is_empty() {
        issues.push(Issue::at(
            &at("columns"),
            "no feature columns".into(),
            Some("list the numeric columns, e.g. `columns: [age, income]`".into()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if c == "example_key" || c == "label" {
            issues.push(Issue::at(
                &at("columns"),
                format!("`{c}` is a name pretext gives its own column"),
                Some(format!("rename it in `source.sql` (e.g. `SELECT {c} AS {c}_value, … FROM source`)")),
            ));
        }
        if !seen.insert(c) {
            issues.push(Issue::at(&at("columns"), format!("column `{c}` is listed twice"), None));
        }
    }
    for c in categorical {
        if !columns.contains(c) {
            issues.push(Issue::at(
                &at("categorical"),
                format!("`{c}` is not one of `columns`"),
                Some("categorical columns are a subset of `columns`; add it there too".into()),
            ));
        }
    }
}

/// `source` or `sources`, weights, names and the stop rule.
fn mixture_rules(spec: &PipelineSpec, issues: &mut Vec<Issue>) {
    let p = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match (&spec.source, spec.sources.is_empty()) {
        (Some(_), false) => issues.push(Issue::at_key(
            &p(&["sources"]),
            "both `source` and `sources` are given".into(),
            Some("use `source` for one source, or list every source under `sources` (with `name` and `weight`)".into()),
        )),
        (None, true) => issues.push(Issue::at_key(
            &p(&["name"]),
            "no `source` (or `sources`) section".into(),
            Some("add `source: { path: data/corpus }`".into()),
        )),
        _ => {}
    }
    if spec.source.is_some() && spec.mixture.is_some() {
        issues.push(Issue::at_key(
            &p(&["mixture"]),
            "`mixture` applies to `sources`, and there is a single `source`".into(),
            Some("remove it, or list the sources under `sources`".into()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in spec.sources.iter().enumerate() {
        let at = |k: &str| vec!["sources".to_string(), i.to_string(), k.to_string()];
        if m.name.trim().is_empty() {
            issues.push(Issue::at(&at("name"), "empty source name".into(), Some("name it, e.g. `name: wiki`".into())));
        } else if !seen.insert(m.name.clone()) {
            issues.push(Issue::at(
                &at("name"),
                format!("two sources are named `{}`", m.name),
                Some("names identify sources in the `source` column and the counts: make them unique".into()),
            ));
        }
        if !m.weight.is_finite() || m.weight < 0.0 {
            issues.push(Issue::at(
                &at("weight"),
                format!("weight {} of source `{}` is not a non-negative number", m.weight, m.name),
                Some("weights are relative shares, e.g. 3 and 1 for 75% and 25%".into()),
            ));
        }
    }
    if !spec.sources.is_empty() && spec.sources.iter().all(|m| m.weight <= 0.0 || m.weight.is_nan()) {
        issues.push(Issue::at_key(
            &p(&["sources"]),
            "every source has weight 0: the mixture would produce nothing".into(),
            Some("give at least one source a positive `weight`".into()),
        ));
    }
    let first = spec.sources.first();
    for (i, m) in spec.sources.iter().enumerate().skip(1) {
        let f = first.expect("non-empty");
        if m.image_shape != f.image_shape || m.label_column.is_some() != f.label_column.is_some() {
            issues.push(Issue::at_key(
                &["sources".to_string(), i.to_string()],
                format!("source `{}` differs from `{}` in `image_shape` or in having a `label_column`", m.name, f.name),
                Some("the examples of every source share one schema: give every source the same".into()),
            ));
        }
    }
}

/// One source's own rules: paths, columns, SQL, Delta time travel, object-store settings.
fn retry_rules(r: &RetrySpec, at: Vec<String>, issues: &mut Vec<Issue>) {
    if r.backoff_s > r.max_backoff_s {
        issues.push(Issue::at(
            &[at, vec!["backoff_s".to_string()]].concat(),
            format!(
                "the first wait ({} s) is longer than the longest (`max_backoff_s`: {} s)",
                r.backoff_s, r.max_backoff_s
            ),
            Some("lower `backoff_s` or raise `max_backoff_s`".into()),
        ));
    }
}

fn member_rules(m: &Member, issues: &mut Vec<Issue>) {
    let source = &m.spec;
    let p = |k: &str| [m.at.clone(), vec![k.to_string()]].concat();
    if let Some([c, h, w]) = source.image_shape {
        if !(c == 1 || c == 3) || h == 0 || w == 0 {
            issues.push(Issue::at(
                &p("image_shape"),
                format!("image_shape [{c}, {h}, {w}] is not [channels (1 or 3), height, width]"),
                Some("pixel arrays are planar: e.g. `image_shape: [3, 32, 32]` for CIFAR".into()),
            ));
        }
    }
    if source.text_column.trim().is_empty() {
        issues.push(Issue::at(
            &p("text_column"),
            "empty column name".into(),
            Some("name the string column that holds the text".into()),
        ));
    }
    if source.path.trim().is_empty() {
        issues.push(Issue::at(
            &p("path"),
            "empty path".into(),
            Some("a Parquet file, a directory or a glob such as `data/*.parquet`".into()),
        ));
    }
    if let Some(sql) = &source.sql {
        if sql.trim().is_empty() {
            issues.push(Issue::at(
                &p("sql"),
                "empty SQL".into(),
                Some("remove `sql:` or write a query over the table `source`".into()),
            ));
        }
    }
    let delta = source.format.is_none_or(|f| f == Format::Delta);
    for (key, set) in [("version", source.version.is_some()), ("as_of", source.as_of.is_some())] {
        if set && !delta {
            issues.push(Issue::at_key(
                &p(key),
                format!("`{key}` selects a Delta table version, but `format` is not `delta`"),
                Some("remove it, or set `format: delta` and point `path` at the table directory".into()),
            ));
        }
    }
    if source.version.is_some() && source.as_of.is_some() {
        issues.push(Issue::at_key(
            &p("as_of"),
            "`version` and `as_of` both choose the table version".into(),
            Some("keep one of them".into()),
        ));
    }
    if let Some(t) = &source.as_of {
        if let Err(e) = chrono::DateTime::parse_from_rfc3339(t) {
            issues.push(Issue::at(
                &p("as_of"),
                format!("`{t}` is not an RFC 3339 timestamp: {e}"),
                Some("write it like `2026-11-01T00:00:00Z` (a date, `T`, a time and a zone)".into()),
            ));
        }
    }
    if !source.storage_options.is_empty() && !is_remote(&source.path) {
        issues.push(Issue::at_key(
            &p("storage_options"),
            format!("`storage_options` configure object stores, but `{}` is a local path", source.path),
            Some("remove them, or use an `s3://`, `gs://` or `az://` path".into()),
        ));
    }
}

fn train_rules(spec: &PipelineSpec, train: &TrainSpec, issues: &mut Vec<Issue>) {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let task = spec.task_name();
    let allowed = allowed_models(&spec.task);
    if let Some(model) = &train.model {
        if !allowed.contains(&model.kind()) {
            let list = allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" or ");
            issues.push(Issue::at_key(
                &p(&["train", "model", model.kind()]),
                format!("task `{task}` trains {list}, not `{}`", model.kind()),
                Some(format!("write `model: {{ {}: {{}} }}` (or leave `model` out for the defaults)", allowed[0])),
            ));
        } else if let Some(s) = model.sizes() {
            if s.hidden % s.heads != 0 {
                issues.push(Issue::at(
                    &p(&["train", "model", model.kind(), "heads"]),
                    format!("hidden size {} is not a multiple of heads {}", s.hidden, s.heads),
                    Some(format!("use heads that divide {} (e.g. {})", s.hidden, largest_divisor(s.hidden, s.heads))),
                ));
            }
        }
        vision_model_rules(spec, model, issues);
    }
    if train.byol.is_some() && !matches!(spec.task, TaskSpec::ContrastiveImage(_)) {
        issues.push(Issue::at_key(
            &p(&["train", "byol"]),
            format!("BYOL trains `contrastive_image` views, not task `{task}`"),
            Some("remove `byol`".into()),
        ));
    }
    match DeviceChoice::parse(&train.device) {
        None => issues.push(Issue::at(
            &p(&["train", "device"]),
            format!("unknown device {:?}", train.device),
            Some("use `auto`, `cpu` or `cuda:N` (e.g. `cuda:0`)".into()),
        )),
        Some(DeviceChoice::Cpu) if train.dtype == DTypeSpec::Bf16 => issues.push(Issue::at(
            &p(&["train", "dtype"]),
            "`dtype: bf16` needs a CUDA device; the CPU trainer computes in f32".into(),
            Some("use `dtype: f32`, or `device: cuda:0` with a build made with `--features cuda`".into()),
        )),
        Some(_) => {}
    }
    let schedule = &train.schedule;
    if schedule.warmup_steps.is_some() && schedule.warmup_ratio.is_some() {
        issues.push(Issue::at(
            &p(&["train", "schedule", "warmup_ratio"]),
            "`warmup_steps` and `warmup_ratio` are both given".into(),
            Some("keep one: `warmup_ratio` (a share of `steps`) fits any run length".into()),
        ));
    }
    if let Some(r) = schedule.warmup_ratio.filter(|r| !(0.0..=1.0).contains(r)) {
        issues.push(Issue::at(
            &p(&["train", "schedule", "warmup_ratio"]),
            format!("warmup_ratio {r} is not between 0 and 1"),
            Some("warmup is usually 0.01-0.1 of the steps".into()),
        ));
    }
    if let Some(w) = schedule.warmup_steps.filter(|&w| w > train.steps) {
        issues.push(Issue::at(
            &p(&["train", "schedule", "warmup_steps"]),
            format!("warmup_steps {w} is more than steps {}", train.steps),
            Some("use `warmup_ratio` (e.g. 0.06) so warmup follows `steps`, or lower `warmup_steps`".into()),
        ));
    }
}

/// Image sizes the vision models need: patches that tile the image, widths that fit.
fn vision_model_rules(spec: &PipelineSpec, model: &ModelSpec, issues: &mut Vec<Issue>) {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let size = match &spec.task {
        TaskSpec::ContrastiveImage(t) => t.image.size,
        TaskSpec::DenoiseImage(t) => t.image.size,
        TaskSpec::Mae(t) => t.image.size,
        _ => return,
    };
    let mae = matches!(spec.task, TaskSpec::Mae(_));
    match model {
        ModelSpec::Vit(v) if !mae && size % v.patch_size != 0 => issues.push(Issue::at(
            &p(&["train", "model", "vit", "patch_size"]),
            format!("patch_size {} does not divide the image size {size}", v.patch_size),
            Some(format!("use a divisor of {size} (e.g. {})", largest_divisor(size, v.patch_size))),
        )),
        ModelSpec::Vit(v) if v.decoder_hidden % v.heads != 0 => issues.push(Issue::at(
            &p(&["train", "model", "vit", "decoder_hidden"]),
            format!("decoder_hidden {} is not a multiple of heads {}", v.decoder_hidden, v.heads),
            None,
        )),
        ModelSpec::Cnn(c)
            if c.widths.is_empty() || c.widths.len() > 8 || c.widths.iter().any(|&w| w == 0 || w > 4096) =>
        {
            issues.push(Issue::at(
                &p(&["train", "model", "cnn", "widths"]),
                "widths must list 1 to 8 stage widths between 1 and 4096".into(),
                Some("e.g. `widths: [32, 64, 128]`".into()),
            ))
        }
        ModelSpec::Cnn(c) if (size >> c.widths.len()) == 0 => issues.push(Issue::at(
            &p(&["train", "model", "cnn", "widths"]),
            format!("{} stride-2 stages shrink a {size}-pixel image below one pixel", c.widths.len()),
            Some("use fewer stages or larger images".into()),
        )),
        _ => {}
    }
}

fn largest_divisor(hidden: u32, below: u32) -> u32 {
    (1..=below.min(hidden)).rev().find(|h| hidden.is_multiple_of(*h)).unwrap_or(1)
}
