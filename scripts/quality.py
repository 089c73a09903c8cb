#!/usr/bin/env python3
"""Cascade's quality harness: the held-out-last protocol, strong simple baselines, and Cascade's
served lists, over several seeds and datasets.

    python scripts/quality.py                                 # both datasets, 3 seeds (~10 min)
    python scripts/quality.py --datasets ml-latest-small --seeds 1 --quick     # CI smoke

Protocol (scripts/recdata.py): every rating is an interaction; per user, ties in time broken at
random with the seed; the last interaction of each user with >= 3 is the test item, the one before
it the validation item. Each method is tuned on the validation split (seed 0: train on all but the
last two, score the second-to-last) and reported on the test split (train on all but the last) for
every seed. Full ranking: every item with a training interaction that the user has not interacted
with in training is a candidate; a held-out item that never appears in training counts as a miss.
Metrics: HR@10, NDCG@10 (one relevant item: 1/log2(rank+1)), catalogue coverage (share of the
candidate items that appear in at least one user's top 10). Mean and sample standard deviation over
seeds. Saves target/cascade-bench/quality.json.

Methods: MostPop; RecentPop (popularity decayed by age at the user's last training interaction);
ItemKNN (cosine, top-K neighbours); EASE (closed form, lambda tuned); Transitions (first-order
item-to-item transition probabilities from the user's last L items, decayed by position); and
`cascade`: the bundle `scripts/train.py` trains on the same split, scored by `served_lists` below,
which computes what the origin serves (the origin's agreement test checks it does).
"""
import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import recdata  # noqa: E402

K = 10
ROOT = pathlib.Path(__file__).resolve().parent.parent


def log(msg):
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def evaluate(split, n_items, score_users, batch=256):
    """HR@10, NDCG@10 and coverage of a scorer `score_users(users) -> float[len(users), n_items]`
    over the split's held-out users. Training items and items never trained on are excluded."""
    trained = np.zeros(n_items, dtype=bool)
    for seq in split.train:
        trained[seq] = True
    users = sorted(split.held_out)
    hits = ndcg = 0.0
    shown = np.zeros(n_items, dtype=bool)
    tops = {}
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        scores = np.asarray(score_users(chunk), dtype=np.float64).copy()
        scores[:, ~trained] = -np.inf
        for row, u in enumerate(chunk):
            scores[row, split.train[u]] = -np.inf
        top = top_k(scores, K)
        for row, u in enumerate(chunk):
            ranked = top[row]
            shown[ranked] = True
            tops[u] = ranked
            target = split.held_out[u]
            if not trained[target]:
                continue  # a cold held-out item: a miss for every method
            where = np.flatnonzero(ranked == target)
            if len(where):
                hits += 1
                ndcg += 1.0 / math.log2(where[0] + 2)
    n = max(len(users), 1)
    return {"hr10": hits / n, "ndcg10": ndcg / n, "coverage": float(shown.sum() / max(trained.sum(), 1))}, tops


def top_k(scores, k):
    """Indices of the k largest scores per row, best first; ties broken by the lower index."""
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------

def interaction_matrix(split, n_items, dtype=np.float32):
    x = np.zeros((len(split.train), n_items), dtype=dtype)
    for u, seq in enumerate(split.train):
        x[u, seq] = 1.0
    return x


def most_pop(split, n_items):
    counts = np.zeros(n_items)
    for seq in split.train:
        np.add.at(counts, seq, 1.0)
    return lambda users: np.tile(counts, (len(users), 1))


def recent_pop(split, n_items, half_life_days):
    """Each item's interactions, weighted 0.5 ** (age / half-life) at the user's last training
    interaction (interactions after it are not seen)."""
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in split.train])
    times = np.concatenate([np.asarray(t, dtype=np.float64) for t in split.train_times])
    half_life = half_life_days * 86400.0

    def score(users):
        out = np.zeros((len(users), n_items))
        for row, u in enumerate(users):
            now = split.train_times[u][-1]
            age = now - times
            weights = np.where(age >= 0, np.exp2(-np.maximum(age, 0.0) / half_life), 0.0)
            out[row] = np.bincount(items, weights=weights, minlength=n_items)
        return out

    return score


def item_knn(split, n_items, neighbours):
    x = interaction_matrix(split, n_items)
    sim = x.T @ x
    norms = np.sqrt(np.diag(sim)).copy()
    norms[norms == 0] = 1.0
    sim /= norms[:, None]
    sim /= norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbours < n_items:
        # Keep each item's top-K neighbours (column-wise: the items that vote for it).
        drop = np.argpartition(-sim, neighbours, axis=0)[neighbours:, :]
        np.put_along_axis(sim, drop, 0.0, axis=0)
    return lambda users: x[users] @ sim


def ease(split, n_items, lam):
    """EASE (Steck, 2019): B = I - P / diag(P) with P = (X^T X + lam I)^-1. With fewer users than
    items, P comes from the Woodbury identity, P = (I - X^T (lam I + X X^T)^-1 X) / lam, and
    scores are computed without forming B: X_u B = X_u - (X_u P) / diag(P)."""
    x = interaction_matrix(split, n_items, np.float64)
    if x.shape[0] < n_items:
        m = np.linalg.inv(lam * np.eye(x.shape[0]) + x @ x.T)
        mx = m @ x
        diag = (1.0 - np.einsum("ui,ui->i", x, mx)) / lam

        def score(users):
            xu = x[users]
            xp = (xu - (xu @ x.T) @ mx) / lam
            return xu - xp / diag[None, :]

        return score
    gram = x.T @ x
    gram[np.diag_indices(n_items)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return lambda users: x[users] @ b


def transitions(split, n_items, last, decay):
    """P(next = j | previous = i) from consecutive training pairs; a user's score is the
    position-decayed sum over their last `last` items (most recent weight 1)."""
    counts = np.zeros((n_items, n_items), dtype=np.float32)
    for seq in split.train:
        if len(seq) > 1:
            np.add.at(counts, (np.asarray(seq[:-1]), np.asarray(seq[1:])), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    probs = counts / totals

    def score(users):
        out = np.zeros((len(users), n_items), dtype=np.float32)
        for row, u in enumerate(users):
            recent = split.train[u][-last:][::-1]
            for k, item in enumerate(recent):
                out[row] += (decay ** k) * probs[item]
        return out

    return score


BASELINES = {
    "mostpop": (most_pop, [{}]),
    "recentpop": (recent_pop, [{"half_life_days": h} for h in (7, 30, 180)]),
    "itemknn": (item_knn, [{"neighbours": k} for k in (20, 50, 200)]),
    "ease": (ease, [{"lam": lam} for lam in (10, 30, 100, 300, 1000)]),
    "transitions": (transitions, [{"last": n, "decay": d} for n in (5, 10, 20, 50) for d in (0.5, 0.8, 0.9)]),
}


# ---------------------------------------------------------------------------------------------
# Cascade
# ---------------------------------------------------------------------------------------------

def mmr_order(scores, vectors, lam):
    """The origin's diversity re-rank (origin/src/recommend/diversity.rs), the same arithmetic:
    greedy (1 - lam) * relevance - lam * (largest cosine similarity to an item placed), relevance
    the scores scaled to 0..1 over the pool; ties by position."""
    scores = np.asarray(scores, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.where(norms > 0, vectors / np.where(norms > 0, norms, 1.0), 0.0)
    span = scores.max() - scores.min()
    relevance = (scores - scores.min()) / (span if span > 0 else 1.0)
    closest = np.zeros(len(scores))
    placed = np.zeros(len(scores), dtype=bool)
    order = []
    for _ in range(len(scores)):
        gain = np.where(placed, -np.inf, (1 - lam) * relevance - lam * closest)
        best = int(np.argmax(gain))  # the first of equal gains: the lower position
        placed[best] = True
        order.append(best)
        closest = np.maximum(closest, unit @ unit[best])
    return order


def intra_list_similarity(lists, vectors):
    """Mean pairwise cosine similarity of the items in each list, averaged over lists."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    values = []
    for ranked in lists.values():
        v = unit[ranked]
        sims = v @ v.T
        n = len(ranked)
        if n > 1:
            values.append((sims.sum() - np.trace(sims)) / (n * (n - 1)))
    return float(np.mean(values)) if values else 0.0


def cascade(split, data, seed, quick, overrides, diversity=(), page=0, device=0):
    """Trains a bundle on the split with scripts/train.py and scores what the origin serves from it
    (`train.Served`: same query, same exclusions, same candidates, same ranker). Returns the ranked
    item indices per held-out user (under "cascade", and under "cascade+mmr<λ>" re-ranked as the
    origin's `[rules] diversity = λ` does, over the first 2K), the training time, and each list
    set's intra-list similarity."""
    import train

    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        options = train.Options(quick=quick, seed=seed, **overrides)
        train.train_bundle(data, split, options, pathlib.Path(tmp))
        seconds = time.time() - started
        served = train.Served(pathlib.Path(tmp))
        index = {item: k for k, item in enumerate(data.item_ids)}
        pool = 2 * K if diversity else K
        tops = {u: served.top(data.user_ids[u], page, device, pool) for u in split.held_out}
        variants = {"cascade": {u: [index[i] for i, _ in top[:K]] for u, top in tops.items()}}
        for lam in diversity:
            lists = {}
            for u, top in tops.items():
                rows = [served.item_index[i] for i, _ in top]
                order = mmr_order([score for _, score in top], served.items[rows], lam)
                lists[u] = [index[top[j][0]] for j in order[:K]]
            variants[f"cascade+mmr{lam:g}"] = lists
        vectors = np.zeros((len(data.item_ids), served.items.shape[1]), dtype=np.float32)
        for item, row in served.item_index.items():
            vectors[index[item]] = served.items[row]
        similarity = {name: intra_list_similarity(lists, vectors) for name, lists in variants.items()}
    return variants, seconds, similarity


def lists_scorer(lists, n_items):
    """A scorer from precomputed ranked lists (rank r gets score -r; unlisted items -inf)."""
    def score(users):
        out = np.full((len(users), n_items), -np.inf)
        for row, u in enumerate(users):
            ranked = lists[u]
            out[row, ranked] = -np.arange(len(ranked), dtype=np.float64)
        return out
    return score


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def summarise(runs):
    out = {}
    if all("ils" in r for r in runs):
        out["ils"] = round(float(np.mean([r["ils"] for r in runs])), 4)
    for key in ("hr10", "ndcg10", "coverage"):
        values = np.array([r[key] for r in runs])
        out[key] = round(float(values.mean()), 4)
        if key != "coverage":
            out[f"{key}_std"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
    out["runs"] = [{k: round(v, 4) for k, v in r.items()} for r in runs]
    return out


def run_dataset(name, seeds, methods, quick, which, overrides, diversity=()):
    data = recdata.find(name)
    n_items = len(data.item_ids)
    log(f"{name}: {len(data.user_ids)} users, {n_items} items, {len(data.rows)} interactions")
    result = {"users": len(data.user_ids), "items": n_items, "interactions": len(data.rows),
              "license": data.license, "methods": {}}
    valid = recdata.split(data, "valid", 0)
    for method in methods:
        started = time.time()
        if method == "cascade":
            runs, train_seconds = {}, []
            for seed in range(seeds):
                test = recdata.split(data, which, seed)
                variants, seconds, similarity = cascade(test, data, seed, quick, overrides, diversity)
                train_seconds.append(seconds)
                for variant, lists in variants.items():
                    metrics, _ = evaluate(test, n_items, lists_scorer(lists, n_items))
                    metrics["ils"] = similarity[variant]
                    runs.setdefault(variant, []).append(metrics)
                    log(f"{name} {variant} seed {seed}: HR@10 {metrics['hr10']:.4f} NDCG@10 {metrics['ndcg10']:.4f} "
                        f"intra-list similarity {metrics['ils']:.3f} (trained in {seconds:.0f} s)")
            for variant, variant_runs in runs.items():
                result["methods"][variant] = summarise(variant_runs)
                result["methods"][variant]["train_seconds"] = round(float(np.mean(train_seconds)), 1)
            continue
        fit, grid = BASELINES[method]
        best, best_params = None, grid[0]
        if len(grid) > 1:
            for params in grid:
                metrics, _ = evaluate(valid, n_items, fit(valid, n_items, **params))
                log(f"{name} {method} {params} validation: NDCG@10 {metrics['ndcg10']:.4f}")
                if best is None or metrics["ndcg10"] > best:
                    best, best_params = metrics["ndcg10"], params
        runs = []
        for seed in range(seeds):
            test = recdata.split(data, which, seed)
            metrics, _ = evaluate(test, n_items, fit(test, n_items, **best_params))
            runs.append(metrics)
        result["methods"][method] = summarise(runs)
        result["methods"][method]["params"] = best_params
        m = result["methods"][method]
        log(f"{name} {method} {best_params}: HR@10 {m['hr10']:.4f}±{m['hr10_std']:.4f} "
            f"NDCG@10 {m['ndcg10']:.4f}±{m['ndcg10_std']:.4f} ({time.time() - started:.0f} s)")
    return result


def table(report):
    lines = []
    for name, ds in report["datasets"].items():
        lines.append(f"\n{name} ({ds['users']} users, {ds['items']} items), {report['split']} split, "
                     f"mean ± std over {report['seeds']} seeds")
        lines.append(f"{'method':<16} {'HR@10':>16} {'NDCG@10':>16} {'coverage':>9} {'ILS':>6}")
        for method, m in ds["methods"].items():
            ils = f"{m['ils']:>6.3f}" if "ils" in m else f"{'':>6}"
            lines.append(f"{method:<16} {m['hr10']:>8.4f} ± {m['hr10_std']:<5.4f} "
                         f"{m['ndcg10']:>8.4f} ± {m['ndcg10_std']:<5.4f} {m['coverage']:>9.3f} {ils}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml-latest-small,ml-100k")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default="mostpop,recentpop,itemknn,ease,transitions,cascade")
    ap.add_argument("--quick", action="store_true", help="fewer training epochs (CI smoke)")
    ap.add_argument("--split", default="test", choices=["test", "valid"],
                    help="report on the test split, or on the validation split (to tune Cascade's model)")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="a training option for Cascade (scripts/train.py's Options), e.g. --set epochs=4")
    ap.add_argument("--must-beat", default="", metavar="METHODS",
                    help="exit 1 unless Cascade's mean HR@10 and NDCG@10 beat these methods' on every dataset")
    ap.add_argument("--diversity", default="", metavar="LAMBDAS",
                    help="also score Cascade's lists re-ranked as [rules] diversity = λ does, e.g. 0.3,0.7 "
                         "(methods cascade+mmr<λ>; every Cascade row gets its intra-list similarity, ILS)")
    ap.add_argument("--out", default=str(ROOT / "target" / "cascade-bench" / "quality.json"))
    args = ap.parse_args()
    try:
        diversity = [float(v) for v in args.diversity.split(",") if v]
    except ValueError:
        ap.error(f"--diversity {args.diversity!r}: expected numbers within 0..1, e.g. 0.3,0.7")
    if any(not 0.0 <= lam <= 1.0 for lam in diversity):
        ap.error("--diversity: every λ must be within 0..1")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m != "cascade" and m not in BASELINES]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; known: {', '.join(BASELINES)}, cascade")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not value:
            ap.error(f"--set {item!r}: expected OPTION=VALUE")
        overrides[key] = float(value) if "." in value else int(value)
    started = time.time()
    report = {"protocol": "held-out last, random tie-break, full ranking, cold held-out = miss",
              "seeds": args.seeds, "quick": args.quick, "split": args.split, "cascade_options": overrides, "datasets": {}}
    for name in args.datasets.split(","):
        report["datasets"][name] = run_dataset(name, args.seeds, methods, args.quick, args.split, overrides,
                                               diversity)
    report["seconds"] = round(time.time() - started, 1)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    log(f"wrote {out} in {report['seconds']:.0f} s")
    failures = []
    for rival in [m for m in args.must_beat.split(",") if m]:
        for name, ds in report["datasets"].items():
            ours, theirs = ds["methods"].get("cascade"), ds["methods"].get(rival)
            if ours is None or theirs is None:
                failures.append(f"{name}: --must-beat {rival} needs both cascade and {rival} in --methods")
            elif not (ours["hr10"] > theirs["hr10"] and ours["ndcg10"] > theirs["ndcg10"]):
                failures.append(f"{name}: cascade HR@10 {ours['hr10']} NDCG@10 {ours['ndcg10']} does not beat "
                                f"{rival} {theirs['hr10']} / {theirs['ndcg10']}")
    if failures:
        sys.exit("quality check failed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
