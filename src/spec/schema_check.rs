//! Checks a located YAML tree against the pipeline's JSON Schema (generated from the Rust types),
//! collecting *every* problem instead of stopping at the first like serde does. Only the schema
//! keywords schemars emits for our types are interpreted.

use serde_json::{Map, Value};

use super::yaml::{Kind, Node};
use super::{did_you_mean, Issue};

/// Validates `node` against `root` (a schemars schema with `$defs`), appending issues.
pub fn check(node: &Node, root: &Value, issues: &mut Vec<Issue>) {
    let mut path = Vec::new();
    Walker { root }.walk(node, root, &mut path, issues);
}

struct Walker<'a> {
    root: &'a Value,
}

fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar(Value::Null) => "nothing (null)".into(),
        Kind::Scalar(Value::Bool(b)) => format!("the boolean `{b}`"),
        Kind::Scalar(Value::Number(n)) => format!("the number `{n}`"),
        Kind::Scalar(Value::String(s)) => format!("the string `{s}`"),
        Kind::Scalar(_) => "a value".into(),
        Kind::Seq(_) => "a list".into(),
        Kind::Map(_) => "a map".into(),
    }
}

fn type_matches(node: &Node, ty: &str) -> bool {
    match (&node.kind, ty) {
        (Kind::Scalar(Value::Null), "null") => true,
        (Kind::Scalar(Value::Bool(_)), "boolean") => true,
        (Kind::Scalar(Value::Number(n)), "integer") => n.is_i64() || n.is_u64(),
        (Kind::Scalar(Value::Number(_)), "number") => true,
        (Kind::Scalar(Value::String(_)), "string") => true,
        (Kind::Seq(_), "array") => true,
        (Kind::Map(_), "object") => true,
        _ => false,
    }
}

fn type_words(ty: &str) -> &str {
    match ty {
        "integer" => "a whole number",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "`true` or `false`",
        "object" => "a map of settings",
        "array" => "a list",
        "null" => "nothing",
        other => other,
    }
}

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn first_sentence(s: &str) -> String {
    let s = s.split("\n\n").next().unwrap_or(s).replace('\n', " ");
    s.trim().to_string()
}

impl<'a> Walker<'a> {
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..32 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else { break };
            let Some(name) = r.strip_prefix("#/$defs/") else { break };
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(s) => schema = s,
                None => break,
            }
        }
        schema
    }

    fn branches(&self, schema: &'a Value) -> Option<Vec<&'a Value>> {
        let list = schema.get("oneOf").or_else(|| schema.get("anyOf"))?.as_array()?;
        Some(list.iter().map(|b| self.resolve(b)).collect())
    }

    fn walk(&self, node: &Node, schema: &'a Value, path: &mut Vec<String>, issues: &mut Vec<Issue>) {
        let schema = self.resolve(schema);
        if schema == &Value::Bool(true) {
            return;
        }
        if let Some(branches) = self.branches(schema) {
            self.walk_choice(node, schema, &branches, path, issues);
            return;
        }
        let types = types_of(schema);
        if !types.is_empty() && !types.iter().any(|t| type_matches(node, t)) {
            let expected: Vec<&str> = types.iter().filter(|t| **t != "null").map(|t| type_words(t)).collect();
            let mut hint = schema.get("description").and_then(Value::as_str).map(first_sentence);
            if types.contains(&"string") && matches!(node.kind, Kind::Scalar(Value::Number(_) | Value::Bool(_))) {
                hint = Some("quote the value to make it a string".into());
            }
            issues.push(Issue::at(path, format!("expected {}, found {}", expected.join(" or "), describe(node)), hint));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            self.check_enum(node, allowed, path, issues);
            return;
        }
        if let Some(c) = schema.get("const") {
            if node.to_json() != *c {
                issues.push(Issue::at(path, format!("expected `{c}`, found {}", describe(node)), None));
            }
            return;
        }
        match &node.kind {
            Kind::Map(entries) => self.walk_map(node, entries, schema, path, issues),
            Kind::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        path.push(i.to_string());
                        self.walk(item, item_schema, path, issues);
                        path.pop();
                    }
                }
            }
            Kind::Scalar(Value::Number(n)) => self.check_range(n, schema, path, issues),
            Kind::Scalar(_) => {}
        }
    }

    fn check_range(&self, n: &serde_json::Number, schema: &Value, path: &[String], issues: &mut Vec<Issue>) {
        let x = n.as_f64().unwrap_or(f64::NAN);
        let min = schema.get("minimum").and_then(Value::as_f64);
        let max = schema.get("maximum").and_then(Value::as_f64);
        let range = match (min, max) {
            (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
            (Some(lo), None) => format!("at least {lo}"),
            (None, Some(hi)) => format!("at most {hi}"),
            (None, None) => return,
        };
        let too_small = min.is_some_and(|lo| x < lo);
        let too_big = max.is_some_and(|hi| x > hi);
        if too_small || too_big {
            let hint = schema.get("description").and_then(Value::as_str).map(first_sentence);
            issues.push(Issue::at(path, format!("{n} is out of range: must be {range}"), hint));
        }
    }

    fn check_enum(&self, node: &Node, allowed: &[Value], path: &[String], issues: &mut Vec<Issue>) {
        let value = node.to_json();
        if allowed.contains(&value) {
            return;
        }
        let names: Vec<String> =
            allowed.iter().map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string())).collect();
        let got = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        let hint = match did_you_mean(&got, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? choose one of: {}", names.join(", ")),
            None => format!("choose one of: {}", names.join(", ")),
        };
        issues.push(Issue::at(path, format!("unknown value `{got}`"), Some(hint)));
    }

    fn walk_map(
        &self,
        _node: &Node,
        entries: &[(String, super::yaml::Pos, Node)],
        schema: &'a Value,
        path: &mut Vec<String>,
        issues: &mut Vec<Issue>,
    ) {
        let empty = Map::new();
        let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        for (key, _, value) in entries {
            path.push(key.clone());
            match props.get(key) {
                Some(sub) => self.walk(value, sub, path, issues),
                None if closed => {
                    let names: Vec<&str> = props.keys().map(String::as_str).collect();
                    let hint = match did_you_mean(key, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? known keys here: {}", names.join(", ")),
                        None if names.is_empty() => "this section takes no settings".to_string(),
                        None => format!("known keys here: {}", names.join(", ")),
                    };
                    issues.push(Issue::at_key(path, format!("unknown key `{key}`"), Some(hint)));
                }
                None => {}
            }
            path.pop();
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !entries.iter().any(|(k, _, _)| k == r) {
                    let desc = props
                        .get(r)
                        .map(|s| self.resolve(s))
                        .and_then(|s| s.get("description"))
                        .and_then(Value::as_str);
                    let hint = match desc {
                        Some(d) => format!("add `{r}:` ({})", first_sentence(d)),
                        None => format!("add `{r}:`"),
                    };
                    issues.push(Issue::at(path, format!("missing required key `{r}`"), Some(hint)));
                }
            }
        }
        // The pipeline needs `source` or `sources` (a mixture): say so as for a required key.
        if path.is_empty()
            && props.contains_key("source")
            && props.contains_key("sources")
            && !entries.iter().any(|(k, _, _)| k == "source" || k == "sources")
        {
            issues.push(Issue::at(
                path,
                "missing required key `source`".into(),
                Some(
                    "add `source: { path: … }`, or `sources:` (a list of named sources with weights) for a mixture"
                        .into(),
                ),
            ));
        }
    }

    /// `oneOf` / `anyOf`: an externally tagged choice (`{variant: settings}`), a set of string
    /// constants, or an untagged union (`false | {window_rows: N}`, `auto | 4`, `X | null`).
    fn walk_choice(
        &self,
        node: &Node,
        schema: &Value,
        branches: &[&'a Value],
        path: &mut Vec<String>,
        issues: &mut Vec<Issue>,
    ) {
        let tags: Vec<&str> = branches.iter().filter_map(|b| tag_of(b)).collect();
        let consts: Vec<&Value> = branches.iter().filter_map(|b| b.get("const")).collect();
        if !tags.is_empty() && tags.len() == branches.len() {
            self.walk_tagged(node, schema, branches, &tags, path, issues);
            return;
        }
        if consts.len() == branches.len() {
            let allowed: Vec<Value> = consts.into_iter().cloned().collect();
            self.check_enum(node, &allowed, path, issues);
            return;
        }
        let mut best: Option<Vec<Issue>> = None;
        for b in branches {
            let types = types_of(b);
            let matches = types.is_empty() || types.iter().any(|t| type_matches(node, t));
            let mut found = Vec::new();
            self.walk(node, b, path, &mut found);
            if found.is_empty() {
                return;
            }
            if matches && best.as_ref().is_none_or(|prev| found.len() < prev.len()) {
                best = Some(found);
            }
        }
        match best {
            Some(found) => issues.extend(found),
            None => {
                let words: Vec<String> = branches.iter().map(|b| self.describe_schema(b)).collect();
                let hint = schema.get("description").and_then(Value::as_str).map(first_sentence);
                issues.push(Issue::at(
                    path,
                    format!("expected {}, found {}", words.join(" or "), describe(node)),
                    hint,
                ));
            }
        }
    }

    fn describe_schema(&self, schema: &Value) -> String {
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            return e
                .iter()
                .map(|v| format!("`{}`", v.as_str().map(str::to_string).unwrap_or(v.to_string())))
                .collect::<Vec<_>>()
                .join(" or ");
        }
        if let Some(c) = schema.get("const") {
            return format!("`{}`", c.as_str().map(str::to_string).unwrap_or(c.to_string()));
        }
        let types = types_of(schema);
        if types == ["object"] {
            if let Some(p) = schema.get("properties").and_then(Value::as_object) {
                let keys: Vec<&str> = p.keys().map(String::as_str).collect();
                return format!("a map with {}", keys.join(", "));
            }
        }
        types.iter().map(|t| type_words(t)).collect::<Vec<_>>().join(" or ")
    }

    fn walk_tagged(
        &self,
        node: &Node,
        schema: &Value,
        branches: &[&'a Value],
        tags: &[&str],
        path: &mut Vec<String>,
        issues: &mut Vec<Issue>,
    ) {
        let choices = tags.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ");
        let entries = match &node.kind {
            Kind::Map(entries) => entries,
            Kind::Scalar(Value::String(s)) => {
                let hint = match tags.iter().position(|t| t == s) {
                    Some(_) => format!("write it as a map: `{s}: {{}}`"),
                    None => format!("choose exactly one of: {choices}"),
                };
                issues.push(Issue::at(
                    path,
                    format!("expected a map with exactly one of {choices}, found {}", describe(node)),
                    Some(hint),
                ));
                return;
            }
            _ => {
                let hint = schema.get("description").and_then(Value::as_str).map(first_sentence);
                issues.push(Issue::at(
                    path,
                    format!("expected a map with exactly one of {choices}, found {}", describe(node)),
                    hint,
                ));
                return;
            }
        };
        if entries.is_empty() {
            issues.push(Issue::at(
                path,
                "no choice given".to_string(),
                Some(format!("choose exactly one of: {choices}")),
            ));
            return;
        }
        if entries.len() > 1 {
            let found: Vec<String> = entries.iter().map(|(k, _, _)| format!("`{k}`")).collect();
            issues.push(Issue::at(
                path,
                format!("choose exactly one, found {}", found.join(" and ")),
                Some(format!("keep one of: {choices}")),
            ));
        }
        for (key, _, value) in entries {
            path.push(key.clone());
            match tags.iter().position(|t| t == key) {
                Some(i) => {
                    let sub =
                        branches[i].get("properties").and_then(|p| p.get(key.as_str())).unwrap_or(&Value::Bool(true));
                    self.walk(value, sub, path, issues);
                }
                None => {
                    let hint = match did_you_mean(key, tags.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? choose one of: {choices}"),
                        None => format!("choose one of: {choices}"),
                    };
                    issues.push(Issue::at_key(path, format!("unknown choice `{key}`"), Some(hint)));
                }
            }
            path.pop();
        }
    }
}

/// The variant name of an externally tagged enum branch: an object with exactly one property,
/// which is required.
fn tag_of(branch: &Value) -> Option<&str> {
    let props = branch.get("properties")?.as_object()?;
    let required = branch.get("required")?.as_array()?;
    if props.len() == 1 && required.len() == 1 {
        required[0].as_str()
    } else {
        None
    }
}
