#!/usr/bin/env python3
"""Writes shared/golden/vectors.json: the contracts' golden test vectors.

The values are computed here, in Python, independently of the Rust code, so the Rust tests in
shared/tests/golden.rs (run natively and on wasm32) check the implementation against a second one.
Segment keys and Redis keys are the contract's literal examples. Run: python3 shared/golden/generate.py
"""
import hashlib
import hmac
import json
import pathlib
import struct

MASK = (1 << 64) - 1


def stable_hash64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK
    z = h
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def jump(key: int, buckets: int) -> int:
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def sign(secret: bytes, method: str, path: str, query: str, ts: int) -> str:
    msg = f"{method.upper()}\n{path}\n{query}\n{ts}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def user_token(secret: bytes, user_id: str, expires_at: int) -> str:
    msg = f"cascade-user-token\nv1\n{user_id}\n{expires_at}".encode()
    return f"v1.{user_id}.{expires_at}." + hmac.new(secret, msg, hashlib.sha256).hexdigest()


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes) -> str:
    """RFC 5869 with one 32-byte block: what a login service in Python runs to get its token key."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).hexdigest()


def emb_file(bundle: str, dim: int, rows) -> bytes:
    out = b"CEMB" + struct.pack("<HHIQH", 1, 0, dim, len(rows), len(bundle)) + bundle.encode()
    for id_, vec in rows:
        out += struct.pack("<H", len(id_)) + id_.encode() + struct.pack(f"<{dim}f", *vec)
    return out


ids = ["1", "42", "user_000001", "u-9.x", "i123", "a" * 64]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REC_ID_MS = 1469918176385  # the ULID specification's example time
REC_ID_RANDOM = 0xCAFEBABE_DEADBEEF_1234


def rec_id(unix_ms: int, random: int) -> str:
    """shared/src/rec_id.rs: 48 bits of milliseconds, 80 random bits, 26 Crockford characters."""
    value = ((unix_ms & (2**48 - 1)) << 80) | (random & (2**80 - 1))
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


vectors = {
    "hash": [
        {"id": i, "stable_hash64": str(stable_hash64(i.encode())),
         "shards": {str(n): jump(stable_hash64(i.encode()), n) for n in (1, 2, 3, 5, 16, 100)}}
        for i in ids
    ],
    "signing": [
        {"secret": s, "method": m, "path": p, "query": q, "timestamp": t, "signature": sign(s.encode(), m, p, q, t)}
        for (s, m, p, q, t) in [
            ("dev-secret-0123456789", "GET", "/v1/segments/home.desktop.us/recs", "n=100", 1764201600),
            ("another-secret-abcdefgh", "get", "/v1/users/42/recs", "n=10&page=browse&device=mobile", 1),
            ("dev-secret-0123456789", "POST", "/v1/events", "", 1764201601),
        ]
    ],
    "user_tokens": [
        {"secret": s, "user_id": u, "expires_at": e, "token": user_token(s.encode(), u, e)}
        for (s, u, e) in [("dev-secret-0123456789", "42", 1764201600), ("another-secret-abcdefgh", "u-9.x", 4102444800)]
    ],
    "derived_keys": [
        {"secret": s, "edge_requests": hkdf_sha256(b"cascade-keys-v1", s.encode(), b"edge-request"),
         "visitor_tokens": hkdf_sha256(b"cascade-keys-v1", s.encode(), b"visitor-token")}
        for s in ["dev-secret-0123456789", "another-secret-abcdefgh"]
    ],
    "segments": [
        {"page": "home", "device": "desktop", "country": "US", "key": "home.desktop.us"},
        {"page": "BROWSE", "device": "Mobile", "country": "de", "key": "browse.mobile.de"},
        {"page": "checkout", "device": "fridge", "country": "USA", "key": "home.desktop.zz"},
        {"page": None, "device": None, "country": None, "key": "home.desktop.zz"},
        {"page": "search", "device": "tablet", "country": "jp", "key": "search.tablet.jp"},
        {"page": "detail", "device": "mobile", "country": "1x", "key": "detail.mobile.zz"},
    ],
    "queries": [
        {"query": "page=browse&device=mobile&n=5", "n": 5, "segment": "browse.mobile.zz"},
        {"query": "n=100&utm_source=spam&page=%3Cscript%3E", "n": 100, "segment": "home.desktop.zz"},
        {"query": "", "n": 20, "segment": "home.desktop.zz"},
        {"query": "n=0", "error_field": "n"},
        {"query": "n=abc", "error_field": "n"},
    ],
    "redis_keys": [
        {"kind": "user", "bundle": "b1", "id": "1", "key": "cascade:emb:u:b1:1"},
        {"kind": "item", "bundle": "b1", "id": "1", "key": "cascade:emb:i:b1:1"},
        {"kind": "recs", "bundle": "b1", "id": "42", "key": "cascade:recs:b1:{42}"},
        {"kind": "generation", "bundle": "", "id": "42", "key": "cascade:gen:{42}"},
        {"kind": "purchases", "bundle": "", "id": "42", "key": "cascade:bought:{42}"},
        {"kind": "recent", "bundle": "", "id": "42", "key": "cascade:recent:{42}"},
        {"kind": "l2", "bundle": "b1", "id": "42", "segment": "home.mobile.us", "generation": 3,
         "key": "cascade:l2:b1:{42}:home.mobile.us:3"},
    ],
    "embedding_value": {"values": [1.0, -0.5, 3.25, 0.0], "hex": struct.pack("<4f", 1.0, -0.5, 3.25, 0.0).hex()},
    # float16 (IEEE half, round to nearest even): 0.1 is not exact, 65504 is the largest finite.
    "embedding_value_f16": {"values": [1.0, -0.5, 0.1, 65504.0],
                            "hex": struct.pack("<4e", 1.0, -0.5, 0.1, 65504.0).hex(),
                            "decoded": list(struct.unpack("<4e", struct.pack("<4e", 1.0, -0.5, 0.1, 65504.0)))},
    "embedding_file": {
        "bundle_id": "golden", "dim": 3,
        "ids": ["i1", "i22"], "values": [0.5, -1.0, 2.0, 0.25, 0.125, -8.0],
        "hex": emb_file("golden", 3, [("i1", [0.5, -1.0, 2.0]), ("i22", [0.25, 0.125, -8.0])]).hex(),
    },
    "rec_list_json": '{"user_id":"42","segment":"home.mobile.us","source":"realtime","model_version":"b1",'
                     '"items":[{"id":"i7","score":0.75,"title":"Toy Story (1995)","position":1},'
                     '{"id":"i3","score":0.5,"position":2}],"rec_id":"01ARYZ6S41TSV4RRFFQ69G5FAV"}',
    "rec_id": {"unix_ms": REC_ID_MS, "random": str(REC_ID_RANDOM), "id": rec_id(REC_ID_MS, REC_ID_RANDOM)},
    "error_json": '{"error":{"code":"invalid_parameter","message":"n: must be an integer from 1 to 100, got \\"0\\"","field":"n"}}',
}

path = pathlib.Path(__file__).with_name("vectors.json")
path.write_text(json.dumps(vectors, indent=1) + "\n")
print(f"wrote {path}")
