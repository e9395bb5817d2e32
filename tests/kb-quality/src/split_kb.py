"""Turns a KB folder's src/phrasings.tsv and src/calls.txt into its evaluation
set, split once into a tuning half and a held-out half (fixed seed,
stratified by kind). Each kbs/*/ folder was split once with it:

    python3 tests/kb-quality/src/split_kb.py tests/kb-quality/kbs/hvac
    python3 tests/kb-quality/src/split_kb.py tests/kb-quality/kbs/shared-fresh ../shared/kb/articles.jsonl --all-heldout

ARTICLES defaults to the folder's articles.jsonl. With --all-heldout
everything goes to the held-out files (a fresh held-out set for a KB whose
older material becomes tuning data)."""
import json, random, sys, pathlib

SEED = 20261206
args = [a for a in sys.argv[1:] if not a.startswith("--")]
root = pathlib.Path(args[0]).resolve()
here = root / "src"
all_heldout = "--all-heldout" in sys.argv
art_path = args[1] if len(args) > 1 else str(root / "articles.jsonl")
articles = {json.loads(l)["id"]: json.loads(l) for l in open(art_path, encoding="utf-8") if l.strip()}
rows = []
for n, line in enumerate(open(here / "phrasings.tsv", encoding="utf-8"), 1):
    if not line.strip() or line.startswith("#"):
        continue
    label, lang, text = line.rstrip("\n").split("\t")
    row = {"query": text, "language": lang}
    if label == "ASK":
        row.update(kind="vague", expected=[], decision="ask")
    elif label == "NONE":
        row.update(kind="unanswerable", expected=[], decision="none")
    else:
        if label not in articles:
            sys.exit(f"phrasings.tsv:{n}: unknown article {label}")
        a = articles[label]
        row.update(kind="cross" if a["language"] != lang else lang,
                   expected=[label], decision="answer", article_language=a["language"])
    rows.append(row)
calls, current = [], None
for n, line in enumerate(open(here / "calls.txt", encoding="utf-8"), 1):
    line = line.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    if line.startswith("= "):
        article, lang = line[2:].split()
        if article not in articles:
            sys.exit(f"calls.txt:{n}: unknown article {article}")
        current = {"expected": [article], "language": lang, "turns": []}
        calls.append(current)
    else:
        role, text = line.split(": ", 1)
        current["turns"].append({"role": {"T": "technician", "A": "agent"}[role], "text": text})
for i, c in enumerate(calls):
    c["id"] = f"call-{i + 1:02d}"
rng = random.Random(SEED)
halves = {"tune": [], "heldout": []}
for kind in sorted({r["kind"] for r in rows}):
    group = [r for r in rows if r["kind"] == kind]
    rng.shuffle(group)
    mid = 0 if all_heldout else len(group) // 2
    halves["tune"] += group[:mid]
    halves["heldout"] += group[mid:]
rng = random.Random(SEED)
rng.shuffle(calls)
mid = 0 if all_heldout else len(calls) // 2
chalves = {"tune": calls[:mid], "heldout": calls[mid:]}
for name in ("tune", "heldout"):
    if all_heldout and name == "tune":
        continue
    with open(root / f"eval-{name}.jsonl", "w", encoding="utf-8") as f:
        for r in halves[name]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(root / f"calls-{name}.jsonl", "w", encoding="utf-8") as f:
        for c in sorted(chalves[name], key=lambda c: c["id"]):
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(name, len(halves[name]), "phrasings,", len(chalves[name]), "calls")
