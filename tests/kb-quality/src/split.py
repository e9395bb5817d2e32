"""Turns phrasings.tsv into the evaluation set, split once into a tuning half
and a held-out half (fixed seed, stratified by kind). Run once; the output
files are committed and never regenerated after tuning starts.

    python3 tests/kb-quality/src/split.py ../shared/kb/articles.jsonl
"""
import json, random, sys, pathlib

SEED = 20261201
ASR = ("haine vé erre", "dé vé erre", "gé esse emme", "pé o eu", "hache dé emme i",
       "pé té zèd", "ventousse", "dyndns")
here = pathlib.Path(__file__).resolve().parent
articles = {json.loads(l)["id"]: json.loads(l) for l in open(sys.argv[1]) if l.strip()}
rows = []
for line in open(here / "phrasings.tsv", encoding="utf-8"):
    label, lang, text = line.rstrip("\n").split("\t")
    row = {"query": text, "language": lang}
    if label == "ASK":
        row.update(kind="vague", expected=[], decision="ask")
    elif label == "NONE":
        row.update(kind="unanswerable", expected=[], decision="none")
    else:
        a = articles[label]
        row.update(kind="cross" if a["language"] != lang else lang,
                   expected=[label], decision="answer", article_language=a["language"])
    if any(s in text for s in ASR):
        row["speech_errors"] = True
    rows.append(row)
rng = random.Random(SEED)
halves = {"tune": [], "heldout": []}
for kind in sorted({r["kind"] for r in rows}):
    group = [r for r in rows if r["kind"] == kind]
    rng.shuffle(group)
    mid = len(group) // 2
    halves["tune"] += group[:mid]
    halves["heldout"] += group[mid:]
for name, items in halves.items():
    with open(here.parent / f"eval-{name}.jsonl", "w", encoding="utf-8") as f:
        for r in items:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(name, len(items))

# Multi-turn calls: `= article language` blocks of `T:`/`A:` lines, split the same way.
calls, current = [], None
for line in open(here / "calls.txt", encoding="utf-8"):
    line = line.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    if line.startswith("= "):
        article, lang = line[2:].split()
        current = {"expected": [article], "language": lang, "turns": []}
        calls.append(current)
    else:
        role, text = line.split(": ", 1)
        current["turns"].append({"role": {"T": "technician", "A": "agent"}[role], "text": text})
for i, c in enumerate(calls):
    c["id"] = f"call-{i + 1:02d}"
rng = random.Random(SEED)
rng.shuffle(calls)
mid = len(calls) // 2
for name, items in (("tune", calls[:mid]), ("heldout", calls[mid:])):
    with open(here.parent / f"calls-{name}.jsonl", "w", encoding="utf-8") as f:
        for c in sorted(items, key=lambda c: c["id"]):
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print("calls", name, len(items))
