"""Scenario `matching`: the cross-venue join (ours) against string-similarity peers, same data.

Data: benchmarks/matching_data.py, seeded: `--a-listings` Kalshi-style and `--b-listings`
Polymarket-style listings, re-phrased positives and hard negatives that move one parameter.

- ours: streams.matching as shipped, in a process of its own: parameter extraction and the
  index of both venues (Python), then the blocked numba join (`join`), top-k per A listing.
  Warm-up (numba's compile or cache load) is excluded. Also one new A listing upserted and
  matched against the 50k index of B, p50/p99 over `--incremental-samples` listings.
- rapidfuzz: `token_set_ratio` over all pairs of a sample of A (`--rapidfuzz-a-sample`, 0 for
  all of it) against all of B; its time is extrapolated to all of A and says so.
- tfidf_topn: TF-IDF character 3-grams (scikit-learn) with sparse_dot_topn's top-k product.
- minhash_lsh: datasketch MinHash LSH over character 3-gram sets.

Peers run from `--peer-python` (`make .venv-matching/.installed`); without it they are skipped.
Quality: precision/recall/F1 of our `match` decisions; for every path, F1 at the threshold that
maximizes it over the path's top-k pairs, and recall@k (positives among the top-k rows).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from benchmarks import common
from benchmarks.common import PathResult, Result
from benchmarks.matching_data import generate, write_csv

log = logging.getLogger(__name__)

OURS: Final = "ours"
RAPIDFUZZ: Final = "rapidfuzz"
TFIDF: Final = "tfidf_topn"
MINHASH: Final = "minhash_lsh"
PATHS: Final[dict[str, str]] = {
    OURS: "streams.matching: parameter extraction, hashed char-trigram+word vectors, blocking "
    "on entities and a date window, numba sparse dot products and top-k, decisions",
    RAPIDFUZZ: "rapidfuzz process.cdist token_set_ratio, all pairs of an A sample, top-k",
    TFIDF: "scikit-learn TfidfVectorizer char_wb 3-grams + sparse_dot_topn sp_matmul_topn, top-k",
    MINHASH: "datasketch MinHash (64 permutations, char 3-gram sets) + MinHashLSH at 0.3, top-k",
}
PEERS: Final = {RAPIDFUZZ: "rapidfuzz", TFIDF: "tfidf", MINHASH: "minhash"}
DEFAULT_ORDER: Final = (OURS, RAPIDFUZZ, TFIDF, MINHASH)
DEFAULT_PEER_PYTHON: Final = common.REPO_DIR / ".venv-matching/bin/python"
PEER_SCRIPT: Final = Path(__file__).resolve().parent / "matching_peers.py"
TARGETS: Final = {
    "join_seconds_under": 1.0,
    "match_f1_at_least": 0.9,
    "incremental_p99_ms_under": 10.0,
}
DISTRIBUTIONS: Final = ("numpy", "numba")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--a-listings", type=int, default=3_220, help="listings of venue A (Kalshi style)")
    add("--b-listings", type=int, default=50_000, help="listings of venue B (Polymarket style)")
    add("--seed", type=int, default=42, help="generator seed")
    add("--top-k", type=int, default=10, help="rows kept per A listing, every path")
    add("--repeats", type=int, default=3, help="measured runs of ours")
    add("--incremental-samples", type=int, default=500, help="new listings matched one by one")
    add("--rapidfuzz-a-sample", type=int, default=400, help="A listings rapidfuzz scores (0: all)")
    add("--peer-python", default=str(DEFAULT_PEER_PYTHON), help="python of .venv-matching")
    add("--data-dir", type=Path, default=None, help="use the data written here (child runs)")
    add("--in-process", action="store_true", help="measure ours in this process")
    add("--keep-temp", action="store_true", help="keep the data and every path's pairs")
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)


def _write_data(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    venues = generate(args.a_listings, args.b_listings, seed=args.seed)
    write_csv(venues.a, root / "a.csv")
    write_csv(venues.b, root / "b.csv")
    truth = {
        "positives": sorted(venues.positives),
        "hard_negatives": [[a, b, kind] for (a, b), kind in sorted(venues.hard_negatives.items())],
    }
    (root / "truth.json").write_text(json.dumps(truth))
    return truth


def _read_truth(root: Path) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    truth = json.loads((root / "truth.json").read_text())
    positives = {(a, b) for a, b in truth["positives"]}
    return positives, {(a, b): kind for a, b, kind in truth["hard_negatives"]}


def quality(
    pairs: list[tuple[str, str, float, int]],
    positives: set[tuple[str, str]],
    matched: set[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Best-threshold precision/recall/F1 over scored pairs, recall@k, and of `matched` if given."""
    ranked = sorted(pairs, key=lambda p: -p[2])
    best: dict[str, float | None] = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": None}
    best_f1 = 0.0
    tp = 0
    for i, (a, b, score, _) in enumerate(ranked):
        tp += (a, b) in positives
        last_of_score = i + 1 == len(ranked) or ranked[i + 1][2] != score
        if tp and last_of_score:
            precision, recall = tp / (i + 1), tp / len(positives)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                best = {"f1": f1, "precision": precision, "recall": recall, "threshold": score}
    found = {(a, b) for a, b, _, _ in pairs}
    out: dict[str, Any] = {
        "positives": len(positives),
        "best_threshold": best,
        "recall_at_k": len(found & positives) / len(positives) if positives else None,
    }
    if matched is not None:
        tp = len(matched & positives)
        precision = tp / len(matched) if matched else 0.0
        recall = tp / len(positives) if positives else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        out["match"] = {"pairs": len(matched), "precision": precision, "recall": recall, "f1": f1}
    return out


def _measure_ours(args: argparse.Namespace, root: Path) -> PathResult:
    from streams.matching import kernels
    from streams.matching.__main__ import read_listings
    from streams.matching.join import Listing, Thresholds, build_index, join, match_listing

    positives, hard = _read_truth(root)
    a_listings, b_listings = read_listings(root / "a.csv"), read_listings(root / "b.csv")
    thresholds = Thresholds(top_k=args.top_k)
    join(build_index(a_listings[:50]), build_index(b_listings[:500]), thresholds)  # warm-up
    rss_before = common.rss_mb()
    common.reset_peak_rss()
    totals: list[float] = []
    joins: list[float] = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        a, b = build_index(a_listings), build_index(b_listings)
        indexed = time.perf_counter()
        result = join(a, b, thresholds)
        done = time.perf_counter()
        totals.append(done - started)
        joins.append(done - indexed)
    peak = common.peak_rss_mb()
    pairs = result.pairs(a, b)
    scored = [(p.a_id, p.b_id, p.score, p.rank) for p in pairs]
    # the parameters veto: a pair whose decisive parameters differ cannot pass any threshold
    with_params = [
        (p.a_id, p.b_id, 0.0 if p.flags & kernels.HARD_MASK else p.score, p.rank) for p in pairs
    ]
    matched = {(p.a_id, p.b_id) for p in pairs if p.decision == "match"}
    # The match_markets agent runs in a worker, which exempts its long-lived heap from the
    # cyclic collector (streams.app); so does this process before timing new listings, or a
    # full collection over the join's results would be timed as a listing's latency.
    gc.collect()
    gc.freeze()
    latencies: list[float] = []
    samples = a_listings[: args.incremental_samples]
    for i, listing in enumerate(samples):
        fresh = Listing(f"new-{i}", listing.title, listing.close_date, listing.category)
        started = time.perf_counter()
        (row,) = a.upsert([fresh])
        match_listing(a, row, b, thresholds)
        latencies.append(time.perf_counter() - started)
    p50, p99 = common.percentiles_ms(latencies)
    rejected = {kind: 0 for kind in sorted(set(hard.values()))}
    totals_by_kind = dict.fromkeys(rejected, 0)
    for pair, kind in hard.items():
        totals_by_kind[kind] += 1
        rejected[kind] += pair not in matched
    return PathResult(
        name=OURS,
        description=PATHS[OURS],
        items=len(a_listings),
        messages=len(pairs),
        wire_bytes=0,
        run_seconds=totals,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(latencies),
        latency_of="one new listing: extract, index, match against B",
        rss_before_mb=rss_before,
        rss_peak_mb=peak,
        details={
            "join_seconds": joins,
            "extract_and_index_seconds": [t - j for t, j in zip(totals, joins, strict=True)],
            "quality": quality(with_params, positives, matched),
            "quality_cosine_only": quality(scored, positives),
            "hard_negatives_not_matched": {
                k: f"{rejected[k]}/{totals_by_kind[k]}" for k in rejected
            },
            "decisions": {
                d: sum(p.decision == d for p in pairs) for d in ("match", "review", "no_match")
            },
        },
    )


def _measure_peer(name: str, args: argparse.Namespace, root: Path) -> PathResult:
    out = root / f"{name}.csv"
    command = [args.peer_python, str(PEER_SCRIPT), PEERS[name], "--a", str(root / "a.csv"),
               "--b", str(root / "b.csv"), "--out", str(out), "--top-k", str(args.top_k),
               "--a-sample", str(args.rapidfuzz_a_sample if name == RAPIDFUZZ else 0)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    positives, _ = _read_truth(root)
    lines = out.read_text(encoding="utf-8").splitlines()[1:]
    pairs = [(a, b, float(s), int(r)) for a, b, s, r in (line.split(",") for line in lines)]
    sampled = bool(info.get("extrapolated"))
    if sampled:
        a_ids = [line.split(",")[0] for line in (root / "a.csv").read_text().splitlines()[1:]]
        scored_a = set(a_ids[: info["a_rows_scored"]])
        positives = {p for p in positives if p[0] in scored_a}
    return PathResult(
        name=name,
        description=PATHS[name],
        items=args.a_listings,
        messages=len(pairs),
        wire_bytes=0,
        run_seconds=[info["seconds_all_a"]],
        rss_peak_mb=info["peak_rss_mb"],
        details={
            "peer": info,
            "quality": quality(pairs, positives),
            "quality_over": "the scored A sample's positives" if sampled else "all positives",
        },
    )


def _targets(result: Result) -> dict[str, Any]:
    names = {p.name for p in result.paths}
    if OURS not in names:
        return {}
    ours = result.path(OURS)
    join_s = min(ours.details["join_seconds"])
    f1 = ours.details["quality"]["match"]["f1"]
    p99 = ours.latency_p99_ms
    return {
        "join_seconds": {"under": TARGETS["join_seconds_under"], "measured": join_s,
                         "met": join_s < TARGETS["join_seconds_under"]},
        "extract_index_join_seconds": {"under": TARGETS["join_seconds_under"], "measured": ours.seconds,
                                       "met": ours.seconds < TARGETS["join_seconds_under"]},
        "match_f1": {"at_least": TARGETS["match_f1_at_least"], "measured": f1,
                     "met": f1 >= TARGETS["match_f1_at_least"]},
        "incremental_p99_ms": {"under": TARGETS["incremental_p99_ms_under"], "measured": p99,
                               "met": p99 is not None and p99 < TARGETS["incremental_p99_ms_under"]},
    }  # fmt: skip


class MatchingResult(Result):
    """A Result with the scenario's targets beside the paths."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {"targets": _targets(self)}


def run(args: argparse.Namespace) -> Result:
    """Write the data once, measure ours in its own process and each peer in its venv's."""
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="marketstream-bench-matching-"))
    skipped: dict[str, str] = {}
    results: list[PathResult] = []
    try:
        if args.data_dir is None:
            _write_data(args, root)
        for name in args.paths:
            if name == OURS:
                if args.in_process:
                    results.append(_measure_ours(args, root))
                else:
                    argv = ["--paths", OURS, "--in-process", "--data-dir", str(root)]
                    argv += common.forwarded_flags(args, ("a_listings", "b_listings", "top_k",
                                                          "repeats", "incremental_samples"))  # fmt: skip
                    results += common.run_isolated("matching", argv, timeout_s=1800)
            elif not Path(args.peer_python).exists():
                skipped[name] = f"no {args.peer_python} (`make .venv-matching/.installed`)"
                log.warning("skipping %s: %s", name, skipped[name])
            else:
                log.info("running %s", name)
                results.append(_measure_peer(name, args, root))
    finally:
        if args.data_dir is None and not args.keep_temp:
            shutil.rmtree(root, ignore_errors=True)
    peer_python = args.peer_python if Path(args.peer_python).exists() else None
    extra = {d: common.installed_version(peer_python, d)
             for d in ("rapidfuzz", "scikit-learn", "sparse-dot-topn", "datasketch")}  # fmt: skip
    return MatchingResult(
        scenario="matching",
        unit="a_listings",
        baseline=OURS,
        parameters={
            "a_listings": args.a_listings,
            "b_listings": args.b_listings,
            "pairs": args.a_listings * args.b_listings,
            "seed": args.seed,
            "top_k": args.top_k,
            "repeats": args.repeats,
            "rapidfuzz_a_sample": args.rapidfuzz_a_sample,
            "incremental_samples": args.incremental_samples,
            "timing": "ours: seconds from parsed listings to every A listing's top-k with "
            "decisions (extraction and indexing of both venues included; details.join_seconds "
            "is the join alone); peers: from titles in memory to top-k pairs",
            "skipped": skipped,
            "files": str(root) if args.keep_temp else None,
            "targets": TARGETS,
            "paths": {name: PATHS[name] for name in args.paths},
        },
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, extra),
    )
