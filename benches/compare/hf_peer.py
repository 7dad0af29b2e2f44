"""The Python peer, written the way its users write it (transformers' run_mlm.py / run_clm.py):
HuggingFace `datasets.map(tokenize, batched=True, num_proc=cores)`, `group_texts` into rows of
`seq_len` tokens, then `DataCollatorForLanguageModeling` (numpy) over batches, written to Parquet.

Usage: hf_peer.py CORPUS.parquet TOKENIZER.json {mlm|causal} OUT_DIR SEQ_LEN NUM_PROC
Prints one JSON line: rows, tokens, seconds per phase.
"""
import json
import os
import sys
import tempfile
import time
from itertools import chain

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

corpus, tokenizer_file, task, out_dir, seq_len, num_proc = sys.argv[1:7]
seq_len, num_proc = int(seq_len), int(num_proc)
datasets.disable_progress_bars()
t0 = time.perf_counter()
tok = PreTrainedTokenizerFast(
    tokenizer_file=tokenizer_file,
    unk_token="[UNK]",
    sep_token="[SEP]",
    pad_token="[PAD]",
    cls_token="[CLS]",
    mask_token="[MASK]",
)
with tempfile.TemporaryDirectory() as cache:
    raw = datasets.load_dataset("parquet", data_files=corpus, split="train", cache_dir=cache)
    raw = raw.filter(lambda b: [t is not None and t.strip() != "" for t in b["text"]], batched=True, num_proc=num_proc)

    def tokenize(batch):
        return tok(batch["text"], return_special_tokens_mask=(task == "mlm"))

    tokenized = raw.map(tokenize, batched=True, num_proc=num_proc, remove_columns=raw.column_names)
    t_tok = time.perf_counter()

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = (len(concatenated["input_ids"]) // seq_len) * seq_len
        return {k: [t[i : i + seq_len] for i in range(0, total, seq_len)] for k, t in concatenated.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc)
    t_group = time.perf_counter()

    collator = DataCollatorForLanguageModeling(tok, mlm=(task == "mlm"), mlm_probability=0.15, return_tensors="np")
    os.makedirs(out_dir, exist_ok=True)
    writer = None
    rows = 0
    batch_rows = 1024
    for start in range(0, len(grouped), batch_rows):
        chunk = grouped[start : start + batch_rows]
        features = [dict(zip(chunk.keys(), values)) for values in zip(*chunk.values())]
        batch = collator(features)
        table = pa.table(
            {
                "input_ids": pa.FixedSizeListArray.from_arrays(batch["input_ids"].astype(np.int32).ravel(), seq_len),
                "labels": pa.FixedSizeListArray.from_arrays(batch["labels"].astype(np.int32).ravel(), seq_len),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(os.path.join(out_dir, "part-00000.parquet"), table.schema, compression="zstd")
        writer.write_table(table)
        rows += table.num_rows
    if writer is not None:
        writer.close()
    t_end = time.perf_counter()

print(
    json.dumps(
        {
            "rows": rows,
            "tokens": rows * seq_len,
            "tokenize_s": t_tok - t0,
            "group_s": t_group - t_tok,
            "collate_write_s": t_end - t_group,
            "total_s": t_end - t0,
        }
    )
)
