#!/usr/bin/env python3
"""Counts the items of pretext's public API: every item reachable from the crate root by
public paths (modules, types, functions, constants, their public fields, variants and the
methods of their inherent impls), from rustdoc's JSON output.

    RUSTC_BOOTSTRAP=1 cargo rustdoc --lib -- -Z unstable-options --output-format json
    python3 scripts/public-api.py "$CARGO_TARGET_DIR/doc/pretext.json" [--list]
"""
import json
import sys

doc = json.load(open(sys.argv[1]))
index = doc["index"]
seen, listed = set(), []


def visit(item_id, path, alias=None):
    item = index.get(str(item_id))
    if item is None or item["crate_id"] != 0 or item_id in seen:
        return
    if item.get("visibility") not in ("public", "default") and item["inner"].keys() & {"module", "struct", "enum", "function", "constant", "type_alias", "trait", "static", "struct_field"}:
        return
    seen.add(item_id)
    kind, inner = next(iter(item["inner"].items()))
    name = alias or item.get("name") or ""
    here = f"{path}::{name}" if path and name else (name or path)
    if kind == "use":
        target = inner.get("id")
        if target is not None:
            visit(target, path, None if inner.get("is_glob") else inner.get("name", name))
        return
    if kind != "impl":
        listed.append((kind, here))
    if kind == "module":
        for c in inner["items"]:
            visit(c, here)
    elif kind == "struct":
        k = inner["kind"]
        fields = k.get("plain", {}).get("fields", []) if isinstance(k, dict) else []
        fields += [f for f in (k.get("tuple", []) if isinstance(k, dict) else []) if f is not None]
        for f in fields:
            visit(f, here)
        for i in inner["impls"]:
            visit(i, here)
    elif kind == "enum":
        for v in inner["variants"]:
            visit(v, here)
        for i in inner["impls"]:
            visit(i, here)
    elif kind == "impl":
        if inner.get("trait") is None and not inner.get("is_synthetic") and inner.get("blanket_impl") is None:
            for c in inner["items"]:
                visit(c, path)


visit(doc["root"], "")
listed = listed[1:]  # the crate root itself
if "--list" in sys.argv:
    for kind, p in sorted(listed, key=lambda x: x[1]):
        print(f"{kind:12} {p}")
print(f"{len(listed)} public items")
