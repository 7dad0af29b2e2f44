//! Identity: stable hashes of settings and bytes, and the settings diff that `--resume` prints
//! when a run or an export was made by a different pipeline.

use serde_json::Value;

/// JSON with sorted keys, so hashes do not depend on field order.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[*k]))).collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The xxh3 hash of `bytes`.
pub fn hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The xxh3 hash of `bytes` as 16 hex digits, as manifests and checkpoints record it.
pub fn hash_hex(bytes: &[u8]) -> String {
    format!("{:016x}", hash(bytes))
}

/// The hash of a settings tree, independent of key order, as 16 hex digits.
pub fn json_hash_hex(v: &Value) -> String {
    hash_hex(canonical_json(v).as_bytes())
}

/// The dotted paths whose values differ between two settings trees, with both values
/// (`stream.batch_size: 8 → 16`; `(unset)` for a missing value).
pub fn differences(old: &Value, new: &Value) -> Vec<String> {
    let show = |v: &Value| if v.is_null() { "(unset)".to_string() } else { v.to_string() };
    let mut out = Vec::new();
    walk(old, new, &mut Vec::new(), &mut |path, a, b| out.push(format!("{path}: {} → {}", show(a), show(b))));
    out
}

/// The dotted paths whose values differ between two settings trees.
pub fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(old, new, &mut Vec::new(), &mut |path, _, _| out.push(path.to_string()));
    out
}

/// Calls `found(path, old, new)` for each leaf that differs, in sorted key order.
fn walk(old: &Value, new: &Value, path: &mut Vec<String>, found: &mut dyn FnMut(&str, &Value, &Value)) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                path.push(k.clone());
                walk(a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), path, found);
                path.pop();
            }
        }
        (a, b) if a != b => found(&path.join("."), a, b),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#);
    }

    #[test]
    fn differences_name_every_changed_path() {
        let old = json!({"seed": 1, "stream": {"batch_size": 8}, "gone": true});
        let new = json!({"seed": 1, "stream": {"batch_size": 16}, "new": "x"});
        assert_eq!(
            differences(&old, &new),
            vec!["gone: true → (unset)", "new: (unset) → \"x\"", "stream.batch_size: 8 → 16"]
        );
        assert_eq!(changed_paths(&old, &new), vec!["gone", "new", "stream.batch_size"]);
        assert!(changed_paths(&old, &old).is_empty());
    }
}
