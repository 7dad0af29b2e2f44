"""Loads a pretext MLM export with pyarrow and HuggingFace `datasets` and checks types and shapes.

Usage: python3 check_export.py EXPORT_DIR SEQ_LEN
"""
import glob
import json
import os
import sys

import pyarrow.parquet as pq
from datasets import Sequence, Value, load_dataset

out, seq_len = sys.argv[1], int(sys.argv[2])
manifest = json.load(open(os.path.join(out, "_manifest.json")))
files = sorted(glob.glob(os.path.join(out, "part-*.parquet")))
assert len(files) == len(manifest["parts"]), (files, manifest["parts"])

table = pq.read_table(files)
assert table.num_rows == manifest["rows"], (table.num_rows, manifest["rows"])
for name in ["input_ids", "attention_mask", "labels", "special_tokens_mask"]:
    t = table.schema.field(name).type
    assert str(t).startswith("fixed_size_list<item: int32") and t.list_size == seq_len, (name, t)
assert str(table.schema.field("example_key").type) == "uint64"

ds = load_dataset("parquet", data_files=files, split="train")
assert len(ds) == manifest["rows"]
feat = ds.features["input_ids"]
inner = getattr(feat, "feature", None)
assert inner == Value("int32") and getattr(feat, "length", None) == seq_len, feat
row = ds[0]
assert len(row["input_ids"]) == seq_len and len(row["labels"]) == seq_len
assert all(l == -100 or l >= 0 for l in row["labels"])
ds_np = ds.with_format("numpy")
batch = ds_np[:4]
assert batch["input_ids"].shape == (min(4, len(ds)), seq_len), batch["input_ids"].shape
print(f"ok: pyarrow and datasets read {len(ds)} rows of {seq_len} tokens; features {ds.features}")
