"""The limits: the tokenizer alone over the corpus (HuggingFace `tokenizers`, `encode_batch_fast`
when the installed version has it, else `encode_batch`, all cores), or a plain Parquet read of the
text column.

Usage: limits.py {tokenizer|read} CORPUS.parquet [TOKENIZER.json]
Prints one JSON line: documents, tokens (tokenizer), seconds.
"""
import json
import sys
import time

import pyarrow.parquet as pq

what, corpus = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()
if what == "read":
    n = sum(1 for t in texts if t)
    print(json.dumps({"documents": n, "seconds": time.perf_counter() - t0}))
    sys.exit()

from tokenizers import Tokenizer  # noqa: E402

tok = Tokenizer.from_file(sys.argv[3])
# A tokenizer.json may carry truncation and padding (sentence-transformers models save both at
# 128): the limit tokenizes every document whole, and counts its tokens, not its padding.
tok.no_truncation()
tok.no_padding()
texts = [t for t in texts if t is not None and t.strip()]
encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
tokens = 0
step = 4096
for i in range(0, len(texts), step):
    tokens += sum(len(e.ids) for e in encode(texts[i : i + step]))
print(json.dumps({"documents": len(texts), "tokens": tokens, "seconds": time.perf_counter() - t0}))
