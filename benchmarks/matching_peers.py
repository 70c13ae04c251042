"""The peers of the `matching` scenario, run from `.venv-matching` by `benchmarks.matching`.

`python benchmarks/matching_peers.py rapidfuzz|tfidf|minhash --a A.csv --b B.csv --out P.csv
--top-k 10 [--a-sample N]` writes `a_id,b_id,score,rank` (top-k per A listing) and prints one
JSON line: seconds (the clock starts after the CSVs are read), peak RSS, what was measured.
Only the standard library is imported at module level: the peer libraries live in that venv.

- rapidfuzz: `process.cdist(..., scorer=fuzz.token_set_ratio, workers=2)` over all pairs of
  `--a-sample` A listings (0: all) and all B; the time is extrapolated to all of A.
- tfidf: scikit-learn's TfidfVectorizer (char_wb 3-grams, sublinear tf) fitted on A and B,
  top-k by sparse_dot_topn's `sp_matmul_topn` (2 threads).
- minhash: datasketch MinHash (64 permutations) of character 3-gram sets, MinHashLSH at
  Jaccard 0.3; candidates ranked by estimated Jaccard.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from typing import Any


def _read(path: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["id"] for r in rows], [r["title"] for r in rows]


def _rapidfuzz(a: list[str], b: list[str], k: int, sample: int) -> tuple[list[Any], dict[str, Any]]:
    import numpy as np
    from rapidfuzz import fuzz, process, utils  # type: ignore[import-not-found]

    rows = a if sample <= 0 else a[:sample]
    a_clean = [utils.default_process(t) for t in rows]
    b_clean = [utils.default_process(t) for t in b]
    out: list[Any] = []
    for start in range(0, len(a_clean), 256):
        scores = process.cdist(a_clean[start : start + 256], b_clean,
                               scorer=fuzz.token_set_ratio, dtype=np.uint8, workers=2)  # fmt: skip
        top = np.argpartition(-scores.astype(np.int16), k, axis=1)[:, :k]
        for i in range(top.shape[0]):
            order = sorted(top[i], key=lambda j: -int(scores[i, j]))
            out.append([(int(j), float(scores[i, j]) / 100) for j in order])
    return out, {"a_rows_scored": len(rows), "pairs_scored": len(rows) * len(b)}


def _tfidf(a: list[str], b: list[str], k: int) -> tuple[list[Any], dict[str, Any]]:
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-not-found]
    from sparse_dot_topn import sp_matmul_topn  # type: ignore[import-not-found]

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True)
    vectorizer.fit(a + b)
    va, vb = vectorizer.transform(a), vectorizer.transform(b)
    product = sp_matmul_topn(va, vb.T.tocsr(), top_n=k, threshold=0.0, sort=True, n_threads=2)
    out: list[Any] = []
    for i in range(product.shape[0]):
        lo, hi = product.indptr[i], product.indptr[i + 1]
        pairs = zip(product.indices[lo:hi], product.data[lo:hi], strict=True)
        out.append(sorted(((int(j), float(s)) for j, s in pairs), key=lambda x: -x[1]))
    return out, {"a_rows_scored": len(a)}


def _minhash(a: list[str], b: list[str], k: int) -> tuple[list[Any], dict[str, Any]]:
    from datasketch import LeanMinHash, MinHash, MinHashLSH  # type: ignore[import-not-found]

    def shingles(text: str) -> list[bytes]:
        t = f" {text.lower()} "
        return sorted({t[i : i + 3].encode() for i in range(len(t) - 2)})

    ha = [LeanMinHash(m) for m in MinHash.bulk([shingles(t) for t in a], num_perm=64)]
    hb = [LeanMinHash(m) for m in MinHash.bulk([shingles(t) for t in b], num_perm=64)]
    lsh = MinHashLSH(threshold=0.3, num_perm=64)
    with lsh.insertion_session() as session:
        for j, h in enumerate(hb):
            session.insert(j, h)
    out: list[Any] = []
    for h in ha:
        found = [(int(j), float(h.jaccard(hb[j]))) for j in lsh.query(h)]
        out.append(sorted(found, key=lambda x: -x[1])[:k])
    return out, {"a_rows_scored": len(a)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="matching_peers")
    parser.add_argument("peer", choices=("rapidfuzz", "tfidf", "minhash"))
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--a-sample", type=int, default=0)
    args = parser.parse_args(argv)
    a_ids, a_titles = _read(args.a)
    b_ids, b_titles = _read(args.b)
    started = time.perf_counter()
    if args.peer == "rapidfuzz":
        top, info = _rapidfuzz(a_titles, b_titles, args.top_k, args.a_sample)
    elif args.peer == "tfidf":
        top, info = _tfidf(a_titles, b_titles, args.top_k)
    else:
        top, info = _minhash(a_titles, b_titles, args.top_k)
    seconds = time.perf_counter() - started
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("a_id", "b_id", "score", "rank"))
        for i, found in enumerate(top):
            writer.writerows(
                (a_ids[i], b_ids[j], f"{s:.4f}", r + 1) for r, (j, s) in enumerate(found)
            )
    scale = len(a_ids) / info["a_rows_scored"]
    info |= {
        "seconds": seconds,
        "seconds_all_a": seconds * scale,
        "extrapolated": scale != 1.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
    }
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
