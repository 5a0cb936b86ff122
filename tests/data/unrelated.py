"""Writes train/unrelated.jsonl: traps that are simply other questions (another topic, or
another language), which real traffic puts above the cosine floor often and the hand-written
look-alikes never show the verifier. Deterministic (seeded); reads only the training files."""
import glob, json, os, random

here = os.path.dirname(os.path.abspath(__file__))
random.seed(18)
rows = []
for f in sorted(glob.glob(os.path.join(here, "train", "[ez][nh]_*.jsonl"))):
    rows += [json.loads(l) for l in open(f, encoding="utf-8")]
by_lang = {lang: [r for r in rows if r["lang"] == lang] for lang in ("en", "zh")}
out = []
for lang, rs in by_lang.items():
    for _ in range(200):
        a, b = random.sample(rs, 2)
        while a["topic"] == b["topic"]:
            a, b = random.sample(rs, 2)
        out.append((a, b))
for _ in range(100):
    a, b = random.choice(by_lang["en"]), random.choice(by_lang["zh"])
    if random.random() < 0.5:
        a, b = b, a
    out.append((a, b))
with open(os.path.join(here, "train", "unrelated.jsonl"), "w", encoding="utf-8") as f:
    for a, b in out:
        row = {"a": a["a"], "b": b["b"], "same_answer": False, "lang": a["lang"],
               "category": "unrelated", "topic": a["topic"]}
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
