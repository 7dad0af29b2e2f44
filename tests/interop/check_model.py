"""Loads a model directory written by `pretext export-model` with HuggingFace transformers.

Usage: check_model.py DIR KIND CHECK.json

KIND is `mlm` (AutoModelForMaskedLM), `causal` (AutoModelForCausalLM) or `bare` (AutoModel).
CHECK.json holds `ids` (one sequence), `logits` (pretext's, row-major, empty for `bare`) and
optionally `text` with pretext's `text_ids` for it, and `resave` (a directory to save the loaded
model into with transformers' own writer). Fails unless the model loads with no missing,
unexpected or mismatched keys and its logits match pretext's to 1e-4.
"""

import json
import os
import sys

import numpy as np
import torch
import transformers

model_dir, kind, check_file = sys.argv[1:4]
check = json.load(open(check_file))
auto = {
    "mlm": transformers.AutoModelForMaskedLM,
    "causal": transformers.AutoModelForCausalLM,
    "bare": transformers.AutoModel,
}[kind]
model, info = auto.from_pretrained(model_dir, output_loading_info=True)
for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
    assert not info.get(key), f"{key}: {info[key]}"
model.eval()
ids = torch.tensor([check["ids"]])
with torch.no_grad():
    out = model(input_ids=ids)
message = f"{type(model).__name__} loaded with no missing or unexpected keys"
if kind != "bare":
    got = out.logits[0].float().numpy()
    want = np.asarray(check["logits"], dtype=np.float32).reshape(got.shape)
    diff = float(np.abs(got - want).max())
    assert diff < 1e-4, f"max abs logit difference {diff}"
    message += f"; max abs logit difference {diff:.1e} over {got.size} logits"
if os.path.exists(os.path.join(model_dir, "tokenizer.json")):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    got = tok(check["text"])["input_ids"]
    assert got == check["text_ids"], f"tokenizer: {got} != {check['text_ids']}"
    assert tok.mask_token is None or tok.convert_tokens_to_ids(tok.mask_token) is not None
    message += f"; AutoTokenizer gives pretext's {len(got)} ids"
if check.get("resave"):
    model.save_pretrained(check["resave"])
print("ok: " + message)
