"""Datasets and the held-out-last split, shared by scripts/train.py and scripts/quality.py.

A dataset is every rating as an implicit interaction, time-ordered per user. Ratings with the same
timestamp are ordered at random with a fixed seed (ordering them by item id, as a plain sort does,
makes about one test user in six 2-3x easier to predict for every model).

The split (per seed): for each user with at least 3 interactions, the last is the TEST item, the one
before it the VALIDATION item. `split(data, "test", seed)` trains on everything but the test items;
`split(data, "valid", seed)` trains on everything but the test and validation items and holds out
the validation items. Users with fewer than 3 interactions are only trained on.
"""
import csv
import pathlib
import zipfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SHARED_DATA = HERE.parent.parent / "shared" / "data"


class Dataset:
    """Interactions of one dataset: per user (index), the items (indices) in time order."""

    def __init__(self, name, user_ids, item_ids, rows, titles=None, license="", categories=None):
        self.name = name
        self.categories = categories or {}  # item id -> [category]
        self.user_ids = user_ids
        self.item_ids = item_ids
        self.rows = rows  # (user index, item index, timestamp)
        self.titles = titles or {}
        self.license = license

    def ordered(self, seed):
        """Per user, (items, timestamps) in time order; ties in time broken at random with `seed`."""
        keys = np.random.default_rng(seed).random(len(self.rows))
        by_user = [[] for _ in self.user_ids]
        for (u, i, t), k in zip(self.rows, keys):
            by_user[u].append((t, k, i))
        return [([i for (_, _, i) in rows], [t for (t, _, _) in rows]) for rows in map(sorted, by_user)]


class Split:
    """Training sequences (per user) and the held-out item per evaluated user."""

    def __init__(self, train, held_out, train_times):
        self.train = train  # list over users of item lists (time order)
        self.held_out = held_out  # dict user -> item
        self.train_times = train_times


def split(data, which, seed, log_from=None):
    """The held-out-last split; `which` is "test" or "valid". Interactions at or after `log_from`
    (a feature log's, appended by `with_events`) are training data only: the held-out items are
    the dataset's own, and the log's interactions follow the rest of each user's training sequence."""
    if which not in ("test", "valid"):
        raise ValueError(f"split must be test or valid, not {which}")
    cut = 1 if which == "test" else 2
    train, held_out, train_times = [], {}, []
    for u, (seq, ts) in enumerate(data.ordered(seed)):
        n = len(seq) if log_from is None else sum(1 for t in ts if t < log_from)
        (seq, extra), (ts, extra_ts) = (seq[:n], seq[n:]), (ts[:n], ts[n:])
        if len(seq) >= 3:
            train.append(seq[:-cut] + extra)
            train_times.append(ts[:-cut] + extra_ts)
            held_out[u] = seq[-cut]
        else:
            train.append(list(seq) + extra)
            train_times.append(list(ts) + extra_ts)
    return Split(train, held_out, train_times)


# Event kinds that count as an interaction when training from the feature log.
LOG_KINDS = ("click", "add_to_cart", "purchase", "rate")


def read_feature_log(folder, kinds=LOG_KINDS):
    """The origin's feature log (docs/feature-log.md): served lists and events, joined by `rec_id`.

    Returns (events, report): the events of `kinds` in time order (user id, item id, time in ms),
    each counted once per idempotency key, and a report of what the log held: lists served,
    events, events that cite a served list, clicks per position."""
    import json

    served, events, seen_keys = {}, [], set()
    files = sorted(pathlib.Path(folder).glob("*.jsonl"))
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                entry = json.loads(line)
                if entry.get("type") == "served":
                    served[entry["rec_id"]] = entry
                elif entry.get("type") == "event":
                    event = entry["event"]
                    key = event.get("idempotency_key")
                    if key is not None:
                        if key in seen_keys:
                            continue
                        seen_keys.add(key)
                    events.append((event.get("timestamp_ms", entry["received_ms"]), event))
    events.sort(key=lambda e: e[0])
    cited = [e for _, e in events if e.get("rec_id") in served]
    by_position = {}
    for e in cited:
        if e.get("position"):
            by_position[e["position"]] = by_position.get(e["position"], 0) + 1
    kept = [(e["user_id"], e["item_id"], t) for t, e in events if e.get("kind") in kinds and e.get("item_id")]
    report = {"files": len(files), "served_lists": len(served), "events": len(events),
              "events_citing_a_served_list": len(cited), "interactions": len(kept),
              "kinds": list(kinds), "clicks_by_position": dict(sorted(by_position.items()))}
    return kept, report


def with_events(data, events):
    """`data` with `events` (user id, item id, time) appended after every existing interaction, in
    their order. New users join; items not in the catalogue are skipped (counted). Returns the
    merged dataset, how many were skipped, and the first log interaction's time (`split`'s
    `log_from`)."""
    user_ids = list(data.user_ids)
    uix = {u: k for k, u in enumerate(user_ids)}
    iix = {i: k for k, i in enumerate(data.item_ids)}
    start = max((t for (_, _, t) in data.rows), default=0) + 1
    rows, skipped = list(data.rows), 0
    for k, (user, item, _) in enumerate(events):
        if item not in iix:
            skipped += 1
            continue
        if user not in uix:
            uix[user] = len(user_ids)
            user_ids.append(user)
        rows.append((uix[user], iix[item], start + k))
    merged = Dataset(data.name, user_ids, data.item_ids, rows, data.titles, data.license, data.categories)
    return merged, skipped, start


def load_movielens_csv(path):
    """ml-latest-small (or any MovieLens in the ratings.csv/movies.csv layout)."""
    path = pathlib.Path(path)
    titles, genres = {}, {}
    movies = path / "movies.csv"
    if movies.exists():
        with open(movies, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                titles[row["movieId"]] = row["title"]
                genres[row["movieId"]] = [g for g in row.get("genres", "").split("|") if g and not g.startswith("(")]
    raw = []
    with open(path / "ratings.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            raw.append((row["userId"], row["movieId"], int(row["timestamp"])))
    data = _index("ml-latest-small", raw, titles, "GroupLens MovieLens terms (research use; see its README.txt)")
    data.categories = {i: genres[i] for i in data.item_ids if genres.get(i)}
    return data


def load_recbole_atomic(path, name):
    """A RecBole atomic `.inter` file (tab-separated, header `user_id:token item_id:token ...
    timestamp:float`), read from the file or from inside a RecBole wheel."""
    path = pathlib.Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            text = wheel.read(f"recbole/dataset_example/{name}/{name}.inter").decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    header = lines[0].split("\t")
    col = {h.split(":")[0]: k for k, h in enumerate(header)}
    raw = []
    for line in lines[1:]:
        parts = line.split("\t")
        raw.append((parts[col["user_id"]], parts[col["item_id"]], int(float(parts[col["timestamp"]]))))
    return _index(name, raw, {}, "GroupLens MovieLens 100K terms (research use), shipped in the RecBole wheel (MIT)")


def _index(name, raw, titles, license):
    def key(x):
        return (0, int(x), "") if x.isdigit() else (1, 0, x)

    user_ids = sorted({r[0] for r in raw}, key=key)
    item_ids = sorted({r[1] for r in raw}, key=key)
    uix = {u: k for k, u in enumerate(user_ids)}
    iix = {i: k for k, i in enumerate(item_ids)}
    rows = [(uix[u], iix[i], t) for (u, i, t) in raw]
    return Dataset(name, user_ids, item_ids, rows, {i: titles.get(i, "") for i in item_ids}, license)


def find(name, home=None):
    """A dataset by name: `ml-latest-small` (../shared/data) or `ml-100k` (the RecBole wheel that
    scripts/setup.sh downloads into $CASCADE_HOME/datasets)."""
    import os

    home = pathlib.Path(home or os.environ.get("CASCADE_HOME", pathlib.Path.home() / ".cache" / "cascade"))
    if name == "ml-latest-small":
        path = pathlib.Path(os.environ.get("CASCADE_MOVIELENS", SHARED_DATA / "ml-latest-small"))
        return load_movielens_csv(path)
    if name == "ml-100k":
        wheels = sorted((home / "datasets").glob("recbole-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"no RecBole wheel under {home / 'datasets'}: run scripts/setup.sh")
        return load_recbole_atomic(wheels[-1], "ml-100k")
    raise ValueError(f"unknown dataset {name!r} (ml-latest-small, ml-100k)")
