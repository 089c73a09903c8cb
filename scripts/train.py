#!/usr/bin/env python3
"""Trains Cascade's model bundle and exports it for the origin.

    python scripts/train.py --out data/bundle                       # generated data (default)
    python scripts/train.py --out data/bundle --movielens ../shared/data/ml-latest-small
    python scripts/train.py --out data/bundle --dataset ml-100k     # any dataset scripts/recdata.py knows
    python scripts/train.py --out data/bundle-128 --dim 128         # the scale tiers' width

The model (docs/bundle.md, "The model"): a user's query is built from what they did last,

    query(u) = user[u] + sum_k weight[k] * context[recent_k(u)]      (k = 0 newest, k < --history)

with `context` an input embedding per item and `weight` learned per position; candidates are the
items with the largest <query, item> (FAISS, inner product over `items.emb`), trained as next-item
prediction with a full softmax over the catalogue at every position of every user's training
sequence. A ranking MLP over [query, item, query*item, page one-hot, device one-hot] then orders the
candidates (its output starts as sigmoid(<query, item>) and learns corrections). The origin computes
the same query from the user's events (newest first) followed by their training history (loaded
with the bundle), and never recommends a history item.

Steps: interactions (generated with clustered tastes, or a real dataset through scripts/recdata.py)
-> the held-out-last split (ties in time broken at random with --seed) -> the sequence model -> the
ranker -> evaluation of the served lists on each user's held-out last item against popularity ->
export. `scripts/quality.py` scores the same bundle against strong baselines over several seeds.

The bundle (one folder, one version id; see docs/bundle.md):
    model.pt        TorchScript; forward(x: float32[B, input_width]) -> float32[B] scores in (0, 1)
    users.emb       user embeddings, the CEMB format of shared/src/embedding.rs
    items.emb       item embeddings (an item's position is its FAISS label)
    context.emb     items' input embeddings for the query (same ids and order as items.emb)
    history.json    each user's training items, oldest first: the query's tail and what is not shown again
    metadata.json   bundle id, dims, input layout, context vocabulary, query weights, popular items, titles, metrics
    reference.json  scores for fixed inputs, so Rust can check its feature layout and the model, and the
                    served top 10 of some users (the origin's agreement test)
"""
import argparse
import dataclasses
import hashlib
import json
import math
import pathlib
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import recdata  # noqa: E402

# The context vocabulary: must equal shared/src/segment.rs (PAGES, DEVICES); the origin checks.
PAGES = ["home", "browse", "detail", "search"]
DEVICES = ["desktop", "mobile", "tablet"]
# What the origin retrieves per real-time request (retrieval.candidates's default) and serves at most.
CANDIDATES = 100
MAX_N = 100


def log(msg):
    print(f"[train] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Options:
    dim: int = 64
    epochs: int = 5  # sequence model; more overfits ml-latest-small (validation NDCG@10 falls after 4-5)
    history: int = 20  # items in the query
    lr: float = 2e-3
    batch: int = 512
    ranker_epochs: int = 0
    seed: int = 42
    quick: bool = False


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def generate(users, items, clusters, seed):
    """Clustered synthetic interactions: each item belongs to a taste cluster and has a Zipf
    popularity; each user likes one to three clusters. Returns (user_ids, item_ids, titles,
    interactions as a time-ordered list of (user, item, page, device, order), item -> [its cluster])."""
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, clusters, size=items)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    rng.shuffle(popularity)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    interactions = []
    for u in range(users):
        liked = rng.choice(clusters, size=rng.integers(1, 4), replace=False)
        pool = np.concatenate([by_cluster[c] for c in liked])
        weights = popularity[pool] / popularity[pool].sum()
        k = int(min(len(pool), rng.integers(15, 50)))
        chosen = rng.choice(pool, size=k, replace=False, p=weights)
        # Mobile visitors lean to popular items: a context effect the ranker can learn.
        for i in chosen:
            page = int(rng.integers(0, len(PAGES)))
            device = int(rng.integers(0, len(DEVICES)))
            interactions.append((u, int(i), page, device, len(interactions)))
    user_ids = [f"u{u}" for u in range(users)]
    item_ids = [f"i{i}" for i in range(items)]
    titles = {f"i{i}": f"Item {i} (cluster {item_cluster[i]})" for i in range(items)}
    return user_ids, item_ids, titles, interactions, {f"i{i}": [f"cluster-{item_cluster[i]}"] for i in range(items)}


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

class Ranker(nn.Module):
    """The ranking model. Input layout (width 3*dim + 7): user[dim], item[dim], user*item[dim],
    page one-hot[4], device one-hot[3]. Output: a score in (0, 1) per row.

    The score is sigmoid(scale * <user, item> + bias + mlp(x)): the matrix-factorisation dot product
    (the sum of the user*item block) is a residual path, so the MLP learns corrections for context
    and interactions on top of a model that already ranks like retrieval."""

    dim: int

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.dim = dim
        width = 3 * dim + len(PAGES) + len(DEVICES)
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
                                 nn.Linear(hidden // 2, 1))
        # Start as "just the dot product": the last layer begins at zero.
        nn.init.zeros_(self.net[4].weight)
        nn.init.zeros_(self.net[4].bias)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dot = x[:, 2 * self.dim:3 * self.dim].sum(dim=1)
        return torch.sigmoid(self.scale * dot + self.bias + self.net(x).squeeze(-1))


def features(u_emb, i_emb, page, device):
    """Builds the ranker's input rows; page and device are int tensors of the same length."""
    n = u_emb.shape[0]
    ctx = torch.zeros(n, len(PAGES) + len(DEVICES))
    ctx[torch.arange(n), page] = 1.0
    ctx[torch.arange(n), len(PAGES) + device] = 1.0
    return torch.cat([u_emb, i_emb, u_emb * i_emb, ctx], dim=1)




def generated_dataset(users, items, clusters, seed):
    user_ids, item_ids, titles, interactions, categories = generate(users, items, clusters, seed)
    rows = [(u, i, t) for (u, i, _, _, t) in interactions]
    return recdata.Dataset(f"generated-{users}x{items}", user_ids, item_ids, rows, titles, "generated", categories)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------



class Sequence(nn.Module):
    """query = user + sum_k weight[k] * context[recent_k]; score(item) = <query, item>."""

    def __init__(self, users, items, dim, history):
        super().__init__()
        self.pad = items
        self.user = nn.Embedding(users, dim)
        self.context = nn.Embedding(items + 1, dim, padding_idx=items)
        self.item = nn.Embedding(items, dim)
        nn.init.zeros_(self.user.weight)
        nn.init.normal_(self.context.weight, std=0.05)
        nn.init.normal_(self.item.weight, std=0.05)
        with torch.no_grad():
            self.context.weight[items].zero_()
        self.weight = nn.Parameter(0.8 ** torch.arange(history, dtype=torch.float32))

    def query(self, recent, users):
        """recent: int[B, history], newest first, padded with `pad`."""
        return self.user(users) + (self.context(recent) * self.weight[None, :, None]).sum(1)


def recent_rows(sequence, history, pad):
    """The last `history` items of a sequence, newest first, padded."""
    recent = sequence[-history:][::-1] if history else []
    return list(recent) + [pad] * (history - len(recent))


def train_sequence(split, users, items, opts):
    torch.manual_seed(opts.seed)
    model = Sequence(users, items, opts.dim, opts.history)
    recent, target, who = [], [], []
    for u, seq in enumerate(split.train):
        for t in range(1, len(seq)):
            recent.append(recent_rows(seq[:t], opts.history, items))
            target.append(seq[t])
            who.append(u)
    recent, target, who = torch.tensor(recent), torch.tensor(target), torch.tensor(who)
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
    gen = torch.Generator().manual_seed(opts.seed)
    epochs = min(opts.epochs, 4) if opts.quick else opts.epochs
    for epoch in range(epochs):
        started, total = time.time(), 0.0
        perm = torch.randperm(len(target), generator=gen)
        for start in range(0, len(target), opts.batch):
            b = perm[start:start + opts.batch]
            logits = model.query(recent[b], who[b]) @ model.item.weight.T
            loss = torch.nn.functional.cross_entropy(logits, target[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        log(f"sequence epoch {epoch + 1}/{epochs}: softmax loss {total / max(len(target), 1):.4f} "
            f"({time.time() - started:.1f} s, {len(target)} positions)")
    return model.eval(), (recent, target, who)


def train_ranker(model, examples, opts):
    """Each training position against two uniformly random negatives, in a random context (the
    datasets here carry no page or device)."""
    torch.manual_seed(opts.seed)
    ranker = Ranker(opts.dim)
    epochs = min(opts.ranker_epochs, 1) if opts.quick else opts.ranker_epochs
    if epochs == 0:
        return ranker.eval()
    recent, target, who = examples
    with torch.no_grad():
        query = model.query(recent, who)
        items = model.item.weight.detach()
    opt = torch.optim.Adam(ranker.parameters(), lr=0.003)
    gen = torch.Generator().manual_seed(opts.seed + 1)
    for epoch in range(epochs):
        perm = torch.randperm(len(target), generator=gen)
        total = 0.0
        for start in range(0, len(target), 1024):
            b = perm[start:start + 1024]
            n = len(b)
            neg = torch.randint(0, len(items), (2 * n,), generator=gen)
            qq = torch.cat([query[b]] * 3)
            ii = torch.cat([target[b], neg])
            page = torch.randint(0, len(PAGES), (3 * n,), generator=gen)
            device = torch.randint(0, len(DEVICES), (3 * n,), generator=gen)
            y = torch.cat([torch.ones(n), torch.zeros(2 * n)])
            p = ranker(features(qq, items[ii], page, device)).clamp(1e-6, 1 - 1e-6)
            loss = torch.nn.functional.binary_cross_entropy(p, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * n
        log(f"ranker epoch {epoch + 1}/{epochs}: bce {total / len(target):.4f}")
    return ranker.eval()


# ---------------------------------------------------------------------------------------------
# The served lists: what the origin computes from a bundle (its agreement test checks)
# ---------------------------------------------------------------------------------------------

def read_emb(path):
    """The CEMB format: (ids, float32 matrix)."""
    raw = pathlib.Path(path).read_bytes()
    magic, version, _flags, dim, count, id_len = raw[:4], *struct.unpack("<HHIQH", raw[4:22])
    assert magic == b"CEMB" and version == 1, f"{path}: not a CEMB v1 file"
    offset = 22 + id_len
    ids, rows = [], np.empty((count, dim), dtype=np.float32)
    for k in range(count):
        (n,) = struct.unpack("<H", raw[offset:offset + 2])
        ids.append(raw[offset + 2:offset + 2 + n].decode())
        offset += 2 + n
        rows[k] = np.frombuffer(raw, dtype="<f4", count=dim, offset=offset)
        offset += 4 * dim
    return ids, rows


class Served:
    """A bundle as the origin serves it, for users with no events yet."""

    def __init__(self, bundle):
        bundle = pathlib.Path(bundle)
        self.metadata = json.loads((bundle / "metadata.json").read_text())
        self.user_ids, self.users = read_emb(bundle / "users.emb")
        self.item_ids, self.items = read_emb(bundle / "items.emb")
        _, self.context = read_emb(bundle / "context.emb")
        self.user_index = {u: k for k, u in enumerate(self.user_ids)}
        self.item_index = {i: k for k, i in enumerate(self.item_ids)}
        history = json.loads((bundle / "history.json").read_text())["users"]
        self.history = {u: [self.item_index[i] for i in items] for u, items in history.items()}
        self.weights = np.asarray(self.metadata["query"]["weights"], dtype=np.float32)
        self.model = torch.jit.load(str(bundle / "model.pt"))

    def query(self, user_id):
        """The origin's order of float32 operations: the user, then each weighted item, newest first."""
        query = self.users[self.user_index[user_id]].copy()
        recent = self.history.get(user_id, [])[::-1][:len(self.weights)]
        for weight, row in zip(self.weights, recent):
            query += weight * self.context[row]
        return query

    def top(self, user_id, page=0, device=0, n=10, candidates=CANDIDATES):
        """[(item id, score)]: the `candidates` items with the largest inner product that are not in
        the user's history, ranked by the model in (page, device), ties by row."""
        query = self.query(user_id)
        dots = self.items @ query
        seen = self.history.get(user_id, [])
        dots[seen] = -np.inf
        k = min(candidates, len(self.item_ids) - len(set(seen)))
        rows = np.argsort(-dots, kind="stable")[:k]
        with torch.no_grad():
            x = features(torch.from_numpy(np.tile(query, (k, 1))), torch.from_numpy(self.items[rows]),
                         torch.full((k,), page), torch.full((k,), device))
            scores = self.model(x).numpy()
        order = sorted(range(k), key=lambda j: (-scores[j], rows[j]))[:n]
        return [(self.item_ids[rows[j]], float(scores[j])) for j in order]


def served_lists(bundle, user_ids, page=0, device=0, n=10):
    served = Served(bundle)
    return {u: served.top(u, page, device, n) for u in user_ids}


# ---------------------------------------------------------------------------------------------
# Training a bundle
# ---------------------------------------------------------------------------------------------

def write_emb(path, bundle_id, ids, matrix):
    """The CEMB format (shared/src/embedding.rs): header, then (u16 id length, id, dim float32) records."""
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    dim = matrix.shape[1]
    with open(path, "wb") as f:
        f.write(b"CEMB" + struct.pack("<HHIQH", 1, 0, dim, len(ids), len(bundle_id)) + bundle_id.encode())
        for id_, row in zip(ids, matrix):
            raw = id_.encode()
            f.write(struct.pack("<H", len(raw)) + raw + row.tobytes())


def train_bundle(data, split, opts, out):
    """Trains on `split` and writes the bundle to `out`; returns its metadata."""
    started = time.time()
    users, items = len(data.user_ids), len(data.item_ids)
    model, examples = train_sequence(split, users, items, opts)
    ranker = train_ranker(model, examples, opts)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    U = model.user.weight.detach().numpy()
    V = model.item.weight.detach().numpy()
    C = model.context.weight.detach().numpy()[:items]
    weights = [float(w) for w in model.weight.detach()]
    digest = hashlib.sha256(U.tobytes() + V.tobytes() + C.tobytes()).hexdigest()[:10]
    prefix = "gen" if data.name.startswith("generated") else data.name.replace("ml-latest-small", "ml")
    bundle_id = f"{prefix}-d{opts.dim}-{digest}"
    torch.jit.script(ranker).save(str(out / "model.pt"))
    write_emb(out / "users.emb", bundle_id, data.user_ids, U)
    write_emb(out / "items.emb", bundle_id, data.item_ids, V)
    write_emb(out / "context.emb", bundle_id, data.item_ids, C)
    history = {data.user_ids[u]: [data.item_ids[i] for i in seq] for u, seq in enumerate(split.train) if seq}
    (out / "history.json").write_text(json.dumps({"bundle_id": bundle_id, "users": history}) + "\n")

    counts = np.zeros(items)
    for seq in split.train:
        np.add.at(counts, seq, 1.0)
    popular = [data.item_ids[i] for i in np.argsort(-counts, kind="stable")[:200]]
    layout = ([f"user[{opts.dim}]", f"item[{opts.dim}]", f"user*item[{opts.dim}]"]
              + [f"page={p}" for p in PAGES] + [f"device={d}" for d in DEVICES])
    metadata = {
        "bundle_id": bundle_id,
        "format_version": 2,
        "dim": opts.dim,
        "input_width": 3 * opts.dim + len(PAGES) + len(DEVICES),
        "input_layout": layout,
        "pages": PAGES,
        "devices": DEVICES,
        "query": {"kind": "sequence", "weights": weights, "context": "context.emb", "history": "history.json"},
        "users": users,
        "items": items,
        "dataset": data.name,
        "seed": opts.seed,
        "options": dataclasses.asdict(opts),
        "popular": popular,
        "titles": {i: t for i, t in data.titles.items() if t},
        "categories": data.categories,
        "torch_version": torch.__version__,
        "created_unix": int(time.time()),
        "train_seconds": round(time.time() - started, 1),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    write_reference(out, bundle_id, ranker, split, data)
    return metadata


def write_reference(out, bundle_id, ranker, split, data):
    """A fixed batch of rows with the model's scores (the ranker's self-check), every item's score
    for a few users' served queries in two contexts (the end-to-end ordering test), and the served
    top 10 of up to 50 held-out users in home/desktop (the origin's agreement test)."""
    served = Served(out)
    n = len(data.item_ids)
    items = torch.from_numpy(served.items)
    with torch.no_grad():
        rows_u = [data.user_ids[k % len(data.user_ids)] for k in range(8)]
        rows_i = (torch.arange(8) * 7) % n
        queries = torch.from_numpy(np.stack([served.query(u) for u in rows_u]))
        x = features(queries, items[rows_i], torch.arange(8) % len(PAGES), torch.arange(8) % len(DEVICES))
        batch_scores = ranker(x)
        users_scored = {}
        for user_id in data.user_ids[:5]:
            query = torch.from_numpy(served.query(user_id))
            per_user = {"query": [float(v) for v in query]}
            for page, device in ((0, 0), (1, 1)):
                s = ranker(features(query.expand(n, -1), items, torch.full((n,), page), torch.full((n,), device)))
                per_user[f"{PAGES[page]}.{DEVICES[device]}"] = [round(float(v), 7) for v in s]
            users_scored[user_id] = per_user
    agreement = [data.user_ids[u] for u in sorted(split.held_out)[:50]]
    reference = {
        "bundle_id": bundle_id,
        "batch": {"inputs": x.tolist(), "scores": batch_scores.tolist()},
        "user_item_scores": users_scored,
        "served": {"page": PAGES[0], "device": DEVICES[0], "candidates": CANDIDATES,
                   "lists": {u: served.top(u, 0, 0, 10) for u in agreement}},
    }
    (out / "reference.json").write_text(json.dumps(reference) + "\n")


def evaluate(bundle, split, data, k=10):
    """HR@10 and NDCG@10 of the served lists (home/desktop) on the held-out items, beside popularity."""
    served = Served(bundle)
    counts = np.zeros(len(data.item_ids))
    for seq in split.train:
        np.add.at(counts, seq, 1.0)
    hr = ndcg = hr_pop = ndcg_pop = 0.0
    for u, target in split.held_out.items():
        top = [served.item_index[i] for i, _ in served.top(data.user_ids[u], n=k)]
        pop = counts.copy()
        pop[split.train[u]] = -1
        top_pop = np.argsort(-pop, kind="stable")[:k].tolist()
        for ranked, is_model in ((top, True), (top_pop, False)):
            if target in ranked:
                gain = 1.0 / math.log2(ranked.index(target) + 2)
                if is_model:
                    hr, ndcg = hr + 1, ndcg + gain
                else:
                    hr_pop, ndcg_pop = hr_pop + 1, ndcg_pop + gain
    n = max(len(split.held_out), 1)
    return {"users_evaluated": len(split.held_out), "hr@10": hr / n, "ndcg@10": ndcg / n,
            "popularity_hr@10": hr_pop / n, "popularity_ndcg@10": ndcg_pop / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--movielens", help="path to ml-latest-small (default: generated data)")
    ap.add_argument("--dataset", help="a dataset scripts/recdata.py knows (ml-latest-small, ml-100k)")
    ap.add_argument("--users", type=int, default=2000, help="generated users")
    ap.add_argument("--items", type=int, default=1000, help="generated items")
    ap.add_argument("--clusters", type=int, default=20, help="generated taste clusters")
    defaults = Options()
    ap.add_argument("--dim", type=int, default=defaults.dim)
    ap.add_argument("--epochs", type=int, default=defaults.epochs, help="sequence model epochs")
    ap.add_argument("--history", type=int, default=defaults.history, help="recent items in the query")
    ap.add_argument("--ranker-epochs", type=int, default=defaults.ranker_epochs)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--feature-log", metavar="DIR",
                    help="also train on the origin's feature log: its click/add_to_cart/purchase/rate events "
                         "become interactions after the dataset's own (docs/feature-log.md)")
    args = ap.parse_args()
    if args.dim < 4 or args.dim > 1024:
        ap.error("--dim must be within 4..1024")
    if args.users < 10 or args.items < 100:
        ap.error("--users must be at least 10 and --items at least 100")
    if not 1 <= args.history <= 200:
        ap.error("--history must be within 1..200")
    if args.epochs < 1 or args.ranker_epochs < 0:
        ap.error("--epochs must be at least 1 and --ranker-epochs at least 0")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    if args.movielens:
        data = recdata.load_movielens_csv(args.movielens)
    elif args.dataset:
        data = recdata.find(args.dataset)
    else:
        data = generated_dataset(args.users, args.items, args.clusters, args.seed)
    log_report, log_from = None, None
    if args.feature_log:
        if not pathlib.Path(args.feature_log).is_dir():
            ap.error(f"--feature-log {args.feature_log}: not a folder")
        events, log_report = recdata.read_feature_log(args.feature_log)
        data, skipped, log_from = recdata.with_events(data, events)
        log_report["skipped_unknown_items"] = skipped
        log(f"feature log {args.feature_log}: {log_report}")
    log(f"{data.name}: {len(data.user_ids)} users, {len(data.item_ids)} items, {len(data.rows)} interactions")
    split = recdata.split(data, "test", args.seed, log_from)
    opts = Options(dim=args.dim, epochs=args.epochs, history=args.history, ranker_epochs=args.ranker_epochs,
                   seed=args.seed)
    out = pathlib.Path(args.out)
    metadata = train_bundle(data, split, opts, out)
    metrics = evaluate(out, split, data)
    metadata["metrics"] = metrics
    if log_report is not None:
        metadata["feature_log"] = log_report
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    log(f"held-out last interaction, {metrics['users_evaluated']} users: "
        f"served HR@10 {metrics['hr@10']:.4f} NDCG@10 {metrics['ndcg@10']:.4f} | "
        f"popularity HR@10 {metrics['popularity_hr@10']:.4f} NDCG@10 {metrics['popularity_ndcg@10']:.4f}")
    log(f"wrote bundle {metadata['bundle_id']} to {out} in {time.time() - started:.1f} s")
    if metrics["hr@10"] <= metrics["popularity_hr@10"]:
        log("warning: the model does not beat the popularity baseline on HR@10")


if __name__ == "__main__":
    main()
