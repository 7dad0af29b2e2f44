"""Builds a Parquet corpus (`id`, `text`) from real text installed by Debian packages:
Python's documentation sources (python3.11-doc) and WordNet glosses (wordnet-base).

Usage: python3 benches/make_corpus.py OUT.parquet
"""
import glob
import sys

import pyarrow as pa
import pyarrow.parquet as pq

texts = []
for path in sorted(glob.glob("/usr/share/doc/python3.11/html/_sources/**/*.rst.txt", recursive=True)):
    with open(path, encoding="utf-8", errors="replace") as f:
        texts.append(f.read())
for part in ["noun", "verb", "adj", "adv"]:
    try:
        with open(f"/usr/share/wordnet/data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("  ") and "|" in line:
                    texts.append(line.split("|", 1)[1].strip())
    except FileNotFoundError:
        pass
if not texts:
    sys.exit("no text found: apt-get install python3.11-doc wordnet-base")
table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string())})
pq.write_table(table, sys.argv[1], compression="zstd")
print(f"wrote {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} MB of text to {sys.argv[1]}")
