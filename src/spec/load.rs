//! Loading: the pipeline file's text → a located YAML tree → `--set` overrides → checked
//! (schema, then rules) → a typed [`PipelineSpec`], with the tree kept so that later errors can
//! point at `file:line:column`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::yaml::{self, Kind, Node, Pos};
use super::{
    is_secret, json_schema, rules::rules, schema_check, Issue, PipelineSpec, SourceSpec, SpecError, SpecErrors,
    TaskSpec,
};

/// A checked pipeline: the typed spec, the resolved tree (defaults filled in) and where it came
/// from (relative paths in the spec are relative to `base_dir`).
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub(crate) spec: PipelineSpec,
    pub(crate) file: PathBuf,
    pub(crate) base_dir: PathBuf,
    /// Located tree as written (with overrides), used to point at fields in later errors.
    pub(crate) tree: Node,
}

impl Pipeline {
    /// The pipeline file it was read from (as given).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// `name`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The task's settings.
    pub(crate) fn task(&self) -> &TaskSpec {
        &self.spec.task
    }

    /// The single source, or the first member of a mixture.
    pub(crate) fn primary_source(&self) -> SourceSpec {
        self.spec.primary_source()
    }

    /// A located error about the field at `path` (used by the I/O-side checks after parsing).
    pub(crate) fn error_at(&self, path: &[&str], message: impl Into<String>, hint: Option<String>) -> SpecError {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        SpecError {
            file: self.file.display().to_string(),
            pos: self.tree.locate(&path),
            path: path.join("."),
            message: message.into(),
            hint,
        }
    }

    /// Resolves a path written in the pipeline file (relative to the file's directory).
    pub(crate) fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The fully resolved spec as JSON (defaults filled in): what the manifest records.
    /// Credentials in `storage_options` are replaced by `"<redacted>"`.
    pub(crate) fn resolved_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.spec).expect("spec serializes");
        let mut sections: Vec<&mut Value> = Vec::new();
        if let Some(o) = v.as_object_mut() {
            for (k, section) in o.iter_mut() {
                match k.as_str() {
                    "source" | "export" => sections.push(section),
                    "sources" => sections.extend(section.as_array_mut().into_iter().flatten()),
                    _ => {}
                }
            }
        }
        for section in sections {
            if let Some(o) = section.get_mut("storage_options").and_then(Value::as_object_mut) {
                for (k, val) in o.iter_mut() {
                    if is_secret(k) {
                        *val = Value::String("<redacted>".into());
                    }
                }
            }
        }
        v
    }

    /// Stable hash of everything that determines the examples (not where they are written).
    pub(crate) fn content_hash(&self) -> u64 {
        let mut v = self.resolved_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("export");
            o.remove("train");
            o.remove("name");
            forget_access(o);
            if let Some(stream) = o.get_mut("stream").and_then(Value::as_object_mut) {
                // Worker count and batch size change neither the examples nor the order.
                stream.remove("workers");
                stream.remove("batch_size");
            }
        }
        crate::ground::identity::hash(crate::ground::identity::canonical_json(&v).as_bytes())
    }
}

/// Removes how the sources are reached (`storage_options`: endpoint, region, credentials) and
/// how patiently (`retry`) from a resolved pipeline: neither changes the examples nor their
/// order, and what is read is checked by the data's own identity (files, sizes, Delta version).
pub fn forget_access(resolved: &mut serde_json::Map<String, Value>) {
    let sections = resolved.iter_mut().flat_map(|(k, v)| match (k.as_str(), v) {
        ("source", v) => vec![v],
        ("sources", Value::Array(members)) => members.iter_mut().collect(),
        _ => vec![],
    });
    for s in sections.filter_map(Value::as_object_mut) {
        s.remove("storage_options");
        s.remove("retry");
    }
}

/// Reads, overrides and checks a pipeline file. Every problem is reported at once.
pub fn load(file: &Path, overrides: &[String]) -> Result<Pipeline, crate::Error> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        crate::Error::env_hint(
            format!("cannot read pipeline file `{}`: {e}", file.display()),
            "check the path; pipelines usually live in `pipelines/*.yaml`",
        )
    })?;
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    load_str(&text, &file.display().to_string(), base_dir, overrides).map_err(crate::Error::Spec)
}

/// [`load`] on text already in memory; `file` is the name used in messages.
pub fn load_str(text: &str, file: &str, base_dir: PathBuf, overrides: &[String]) -> Result<Pipeline, SpecErrors> {
    let err = |pos: Pos, path: String, message: String, hint: Option<String>| SpecError {
        file: file.to_string(),
        pos,
        path,
        message,
        hint,
    };
    let mut tree = match yaml::parse(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(SpecErrors(vec![err(
                Pos::File { line: e.line, col: e.col },
                String::new(),
                format!("invalid YAML: {}", e.message),
                Some("check indentation and that every `key: value` pair is on its own line".into()),
            )]))
        }
    };
    let mut errors = Vec::new();
    for o in overrides {
        if let Err(e) = apply_override(&mut tree, o) {
            errors.push(err(
                Pos::Override(o.clone()),
                String::new(),
                e,
                Some("write overrides as `--set section.key=value`, e.g. `--set stream.batch_size=64`".into()),
            ));
        }
    }
    if !matches!(tree.kind, Kind::Map(_)) {
        errors.push(err(
            tree.pos.clone(),
            String::new(),
            "a pipeline file must be a map of sections".into(),
            Some("start with `name:`, `source:` and `task:`".into()),
        ));
        return Err(SpecErrors(errors));
    }
    let schema = json_schema();
    let mut issues = Vec::new();
    schema_check::check(&tree, &schema, &mut issues);
    let locate = |issues: Vec<Issue>, tree: &Node| -> Vec<SpecError> {
        issues
            .into_iter()
            .map(|i| {
                let pos = if i.at_key { tree.locate_key(&i.path) } else { tree.locate(&i.path) };
                err(pos, i.path.join("."), i.message, i.hint)
            })
            .collect()
    };
    errors.extend(locate(issues, &tree));
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    let spec: PipelineSpec = match serde_json::from_value(tree.to_json()) {
        Ok(s) => s,
        Err(e) => {
            return Err(SpecErrors(vec![err(tree.pos.clone(), String::new(), format!("{e}"), None)]));
        }
    };
    let issues = rules(&spec);
    errors.extend(locate(issues, &tree));
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    Ok(Pipeline { spec, file: PathBuf::from(file), base_dir, tree })
}

/// Applies `a.b.c=value`: the value is parsed as YAML (so `8`, `true`, `[1, 2]` and
/// `{window_rows: 64}` work) and placed at the path, creating maps on the way.
fn apply_override(tree: &mut Node, text: &str) -> Result<(), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("`{text}` has no `=`"))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|s| s.is_empty()) {
        return Err(format!("`{key}` is not a dotted key path"));
    }
    let value = yaml::parse_override_value(value, text).map_err(|e| format!("cannot parse the value: {e}"))?;
    let pos = Pos::Override(text.to_string());
    let mut node = tree;
    for (i, seg) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if !matches!(node.kind, Kind::Map(_)) {
            // Replacing a scalar with a map: e.g. `--set shuffle.window_rows=8` when `shuffle: false`.
            *node = Node { pos: pos.clone(), kind: Kind::Map(Vec::new()) };
        }
        let Kind::Map(entries) = &mut node.kind else { unreachable!() };
        let idx = match entries.iter().position(|(k, _, _)| k == seg) {
            Some(i) => i,
            None => {
                entries.push((seg.to_string(), pos.clone(), Node { pos: pos.clone(), kind: Kind::Map(Vec::new()) }));
                entries.len() - 1
            }
        };
        if last {
            entries[idx].1 = pos.clone();
            entries[idx].2 = value;
            return Ok(());
        }
        node = &mut entries[idx].2;
    }
    Ok(())
}
