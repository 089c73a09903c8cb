//! Golden vectors (computed independently by `shared/golden/generate.py`) checked against the Rust
//! implementation, natively (`cargo test`) and on wasm32 under Node (`wasm-bindgen-test`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_shared::embedding::{ValueEncoding, decode_file, decode_value, encode_file, encode_value, encode_value_as};
use cascade_shared::hashing::{shard_for, stable_hash64};
use cascade_shared::keys::{
    EntityKind, embedding_key, generation_key, l2_key, precomputed_key, purchases_key, recent_key,
};
use cascade_shared::segment::SegmentKey;
use cascade_shared::signing::{RequestTarget, sign, verify};
use cascade_shared::token;
use cascade_shared::validate::RecsQuery;
use cascade_shared::wire::{ErrorBody, RecList};
use serde_json::Value;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../golden/vectors.json")).expect("vectors.json is JSON")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

#[test]
fn hash_and_shards() {
    for case in vectors()["hash"].as_array().unwrap() {
        let id = s(&case["id"]);
        assert_eq!(stable_hash64(id.as_bytes()).to_string(), s(&case["stable_hash64"]), "{id}");
        for (shards, expected) in case["shards"].as_object().unwrap() {
            assert_eq!(
                u64::from(shard_for(id, shards.parse().unwrap())),
                expected.as_u64().unwrap(),
                "{id} over {shards}"
            );
        }
    }
}

#[test]
fn signatures() {
    for case in vectors()["signing"].as_array().unwrap() {
        let (secret, method, path, query) =
            (s(&case["secret"]), s(&case["method"]), s(&case["path"]), s(&case["query"]));
        let ts = case["timestamp"].as_u64().unwrap();
        assert_eq!(sign(secret.as_bytes(), method, path, query, ts), s(&case["signature"]));
        let ts_text = ts.to_string();
        let ok = verify(
            secret.as_bytes(),
            RequestTarget { method, path, query },
            Some(&ts_text),
            Some(s(&case["signature"])),
            ts + 10,
            300,
        );
        assert_eq!(ok, Ok(()));
    }
}

#[test]
fn derived_keys() {
    for case in vectors()["derived_keys"].as_array().unwrap() {
        let keys = cascade_shared::signing::Keys::derive(s(&case["secret"]).as_bytes());
        assert_eq!(hex::encode(keys.edge_requests), s(&case["edge_requests"]));
        assert_eq!(hex::encode(keys.visitor_tokens), s(&case["visitor_tokens"]));
    }
}

#[test]
fn user_tokens() {
    for case in vectors()["user_tokens"].as_array().unwrap() {
        let (secret, user, expires_at) =
            (s(&case["secret"]).as_bytes(), s(&case["user_id"]), case["expires_at"].as_u64().unwrap());
        assert_eq!(token::issue(secret, user, expires_at), s(&case["token"]));
        assert_eq!(token::verify(secret, s(&case["token"]), expires_at - 1), Ok(user));
    }
}

#[test]
fn segment_keys() {
    for case in vectors()["segments"].as_array().unwrap() {
        let key = SegmentKey::from_parts(case["page"].as_str(), case["device"].as_str(), case["country"].as_str());
        assert_eq!(key.to_string(), s(&case["key"]));
        assert_eq!(SegmentKey::parse(s(&case["key"])), Ok(key));
    }
}

#[test]
fn query_strings() {
    for case in vectors()["queries"].as_array().unwrap() {
        match RecsQuery::parse(s(&case["query"])) {
            Ok(q) => {
                assert_eq!(q.n as u64, case["n"].as_u64().unwrap());
                assert_eq!(q.segment.to_string(), s(&case["segment"]));
            }
            Err(e) => assert_eq!(e.field, s(&case["error_field"])),
        }
    }
}

#[test]
fn redis_keys() {
    for case in vectors()["redis_keys"].as_array().unwrap() {
        let (bundle, id) = (s(&case["bundle"]), s(&case["id"]));
        let key = match s(&case["kind"]) {
            "user" => embedding_key(EntityKind::User, bundle, id),
            "item" => embedding_key(EntityKind::Item, bundle, id),
            "generation" => generation_key(id),
            "purchases" => purchases_key(id),
            "recent" => recent_key(id),
            "l2" => l2_key(bundle, id, s(&case["segment"]), case["generation"].as_u64().unwrap()),
            _ => precomputed_key(bundle, id),
        };
        assert_eq!(key, s(&case["key"]));
    }
}

#[test]
fn embedding_encodings() {
    let v = vectors();
    let value = &v["embedding_value"];
    let floats: Vec<f32> = value["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(hex::encode(encode_value(&floats)), s(&value["hex"]));
    assert_eq!(decode_value(&hex::decode(s(&value["hex"])).unwrap(), 4).unwrap(), floats);
    let half = &v["embedding_value_f16"];
    let floats: Vec<f32> = half["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let decoded: Vec<f32> = half["decoded"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(hex::encode(encode_value_as(&floats, ValueEncoding::F16)), s(&half["hex"]));
    assert_eq!(decode_value(&hex::decode(s(&half["hex"])).unwrap(), 4).unwrap(), decoded);

    let file = &v["embedding_file"];
    let bytes = hex::decode(s(&file["hex"])).unwrap();
    let table = decode_file(&bytes).unwrap();
    assert_eq!(table.header.bundle_id, s(&file["bundle_id"]));
    assert_eq!(table.header.dim as u64, file["dim"].as_u64().unwrap());
    let ids: Vec<&str> = file["ids"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(table.ids, ids);
    let values: Vec<f32> = file["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(table.values, values);
    assert_eq!(encode_file(s(&file["bundle_id"]), 3, &ids, &values), bytes);
}

#[test]
fn rec_ids_match_the_python_encoder() {
    let v = vectors();
    let r = &v["rec_id"];
    let (ms, random) = (r["unix_ms"].as_u64().unwrap(), s(&r["random"]).parse::<u128>().unwrap());
    assert_eq!(cascade_shared::rec_id::new(ms, random), s(&r["id"]));
    assert_eq!(cascade_shared::rec_id::unix_ms(s(&r["id"])), Some(ms));
}

#[test]
fn wire_json() {
    let v = vectors();
    let list: RecList = serde_json::from_str(s(&v["rec_list_json"])).unwrap();
    assert_eq!(serde_json::to_string(&list).unwrap(), s(&v["rec_list_json"]));
    let error: ErrorBody = serde_json::from_str(s(&v["error_json"])).unwrap();
    let from_code = ErrorBody::invalid(&RecsQuery::parse("n=0").unwrap_err());
    assert_eq!(error, from_code);
    assert_eq!(from_code.to_json(), s(&v["error_json"]));
}
