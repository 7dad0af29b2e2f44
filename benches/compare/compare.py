"""Side by side on one machine, one corpus, one tokenizer: `pretext export` against the Python
peer (HuggingFace datasets + transformers' collator, `hf_peer.py`) and against the limits (the
tokenizer alone, a plain Parquet read), for MLM and causal LM at seq_len 128 with packing. Runs
alternate between systems (round r starts at a different system), each system runs `--runs`
times, and medians are reported. Then the scaling table: pretext with 1..N workers, and peak RSS
for the corpus ×1 and ×10.

Usage (see run.sh, which installs everything):
  compare.py --corpus C.parquet --tokenizer T.json --pretext BIN --python VENV_PYTHON --out RESULTS.md
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


CRITERION = "## Criterion benches"


def run(cmd, work, name):
    """Runs `cmd`, returning wall seconds, peak RSS (KiB, the largest process), its stdout and
    the CPU it used as a share of one core (1.6 = 160%)."""
    rss_file = os.path.join(work, f"{name}.rss")
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M %P", "-o", rss_file] + cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    with open(rss_file) as f:
        rss, cpu = f.read().strip().splitlines()[-1].split()
    return seconds, int(rss), p.stdout, float(cpu.rstrip("%")) / 100


def pipeline(work, name, corpus, tokenizer, task, workers):
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(
            f"name: {name}\n"
            f"source: {{ path: '{corpus}' }}\n"
            f"tokenizer: {{ file: '{tokenizer}' }}\n"
            f"task: {{ {task}: {{ seq_len: 128 }} }}\n"
            f"stream: {{ workers: {workers} }}\n"
            f"export: {{ rows_per_file: 1000000 }}\n"
        )
    return path


def parquet_rows(out_dir, py):
    code = "import sys, glob, pyarrow.parquet as pq; print(sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(sys.argv[1] + '/*.parquet')))"
    return int(subprocess.run([py, "-c", code, out_dir], capture_output=True, text=True, check=True).stdout)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} {platform.release()}"


def versions(py):
    code = "import datasets, transformers, tokenizers, pyarrow; print(f'datasets {datasets.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, pyarrow {pyarrow.__version__}')"
    return subprocess.run([py, "-c", code], capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--pretext", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--command", default="benches/compare/run.sh")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    corpus, tok, py = os.path.abspath(args.corpus), os.path.abspath(args.tokenizer), args.python
    work = tempfile.mkdtemp(prefix="pretext-compare-")
    try:
        cases = {
            "HF datasets + collator, MLM": [py, os.path.join(HERE, "hf_peer.py"), corpus, tok, "mlm", f"{work}/peer-mlm", "128", str(cores)],
            "pretext export, MLM": [args.pretext, "export", pipeline(work, "mlm", corpus, tok, "mlm", "auto"), "--out", f"{work}/pretext-mlm", "--quiet"],
            "HF datasets + collator, causal": [py, os.path.join(HERE, "hf_peer.py"), corpus, tok, "causal", f"{work}/peer-causal", "128", str(cores)],
            "pretext export, causal": [args.pretext, "export", pipeline(work, "causal", corpus, tok, "causal", "auto"), "--out", f"{work}/pretext-causal", "--quiet"],
            "limit: tokenizer alone": [py, os.path.join(HERE, "limits.py"), "tokenizer", corpus, tok],
            "limit: Parquet read of the text": [py, os.path.join(HERE, "limits.py"), "read", corpus],
        }
        names = list(cases)
        results = {n: [] for n in names}
        outputs = {}
        for r in range(args.runs):
            order = names[r % len(names):] + names[: r % len(names)]
            for n in order:
                for a in cases[n]:
                    if a.startswith(f"{work}/") and ("peer-" in a or "pretext-" in a):
                        shutil.rmtree(a, ignore_errors=True)
                seconds, rss, out, _ = run(cases[n], work, n.replace(" ", "_").replace(",", "").replace(":", ""))
                results[n].append((seconds, rss))
                outputs[n] = out
                print(f"round {r + 1}/{args.runs}  {n:<34} {seconds:8.2f} s  {rss / 1024:7.0f} MiB", flush=True)
        limit = json.loads(outputs["limit: tokenizer alone"].strip().splitlines()[-1])
        tokens, documents = limit["tokens"], limit["documents"]
        rows = {
            "pretext export, MLM": parquet_rows(f"{work}/pretext-mlm", py),
            "pretext export, causal": parquet_rows(f"{work}/pretext-causal", py),
            "HF datasets + collator, MLM": json.loads(outputs["HF datasets + collator, MLM"].strip().splitlines()[-1])["rows"],
            "HF datasets + collator, causal": json.loads(outputs["HF datasets + collator, causal"].strip().splitlines()[-1])["rows"],
        }
        med = {n: statistics.median(s for s, _ in results[n]) for n in names}
        peak = {n: max(m for _, m in results[n]) for n in names}
        rate = {n: tokens / med[n] for n in names}

        # Scaling: workers 1 .. cores, and the corpus ×10 for memory.
        scaling = []
        for w in sorted({1, 2, cores}):
            if w > cores:
                continue
            secs = []
            for _ in range(args.runs):
                shutil.rmtree(f"{work}/scale", ignore_errors=True)
                s, m, _, c = run([args.pretext, "export", pipeline(work, f"w{w}", corpus, tok, "mlm", w), "--out", f"{work}/scale", "--quiet"], work, f"w{w}")
                secs.append((s, m, c))
            scaling.append((w, statistics.median(s for s, _, _ in secs), max(m for _, m, _ in secs), statistics.median(c for _, _, c in secs)))
        x10 = os.path.join(work, "x10")
        os.makedirs(x10)
        for i in range(10):
            os.symlink(corpus, os.path.join(x10, f"part-{i}.parquet"))
        shutil.rmtree(f"{work}/scale", ignore_errors=True)
        s10, m10, _, _ = run([args.pretext, "export", pipeline(work, "x10", x10, tok, "mlm", "auto"), "--out", f"{work}/scale", "--quiet"], work, "x10")
        x1 = [m for w, _, m, _ in scaling if w == cores][0]

        def ratio(a, b):
            return f"{rate[a] / rate[b]:.2f}×"

        lines = [
            "# Results",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
            f"Peers: {versions(py)}. pretext: `{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=HERE).stdout.strip()}` (release build).",
            f"Corpus: `{os.path.basename(corpus)}`, {documents:,} non-blank documents, {os.path.getsize(corpus) / 1e6:.1f} MB Parquet, "
            f"{tokens:,} tokens under `{os.path.basename(os.path.dirname(os.path.dirname(tok)))}/{os.path.basename(tok)}`.",
            f"Command: `{args.command}` ({args.runs} runs of each, alternating; medians; tokens/s is the corpus's tokens over the wall time, start-up included).",
            "",
            "| system | median s | tokens/s | peak RSS | rows of 128 | pretext / this |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for n in names:
            vs = ""
            if n.startswith("HF") and "MLM" in n:
                vs = ratio("pretext export, MLM", n)
            elif n.startswith("HF"):
                vs = ratio("pretext export, causal", n)
            elif n == "limit: tokenizer alone":
                vs = f"MLM {ratio('pretext export, MLM', n)}, causal {ratio('pretext export, causal', n)}"
            lines.append(
                f"| {n} | {med[n]:.2f} | {rate[n] / 1e6:.2f} M | {peak[n] / 1024:.0f} MiB | {rows.get(n, '')} | {vs} |"
            )
        lines += [
            "",
            "Peak RSS is the largest single process (`/usr/bin/time %M`); the peer's `num_proc` workers are",
            "separate processes, each of about that size.",
            "",
            "## Scaling (pretext export, MLM)",
            "",
            "`workers` counts the threads that tokenize and apply the task; the Parquet writer (encoding",
            "and compression) runs beside them on a thread of its own, so one worker already uses more",
            "than one core (CPU: cores busy on average over the run, start-up included).",
            "",
            "| workers | median s | tokens/s | CPU | peak RSS |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for w, s, m, c in scaling:
            lines.append(f"| {w} | {s:.2f} | {tokens / s / 1e6:.2f} M | {c:.2f} | {m / 1024:.0f} MiB |")
        lines += [
            "",
            "| corpus | seconds | peak RSS |",
            "| --- | ---: | ---: |",
            f"| ×1 | {[s for w, s, _, _ in scaling if w == cores][0]:.2f} | {x1 / 1024:.0f} MiB |",
            f"| ×10 (the same file 10 times) | {s10:.2f} | {m10 / 1024:.0f} MiB ({m10 / x1:.2f}× the ×1 peak) |",
            "",
        ]
        # The criterion figures below this heading are written by hand; keep them.
        kept = ""
        if os.path.exists(args.out):
            with open(args.out) as f:
                old = f.read()
            at = old.find(CRITERION)
            kept = old[at:] if at >= 0 else ""
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + ("\n" + kept if kept else ""))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
