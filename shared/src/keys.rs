//! The Redis key schema.
//!
//! Every key starts with `cascade:`, then the kind of thing it holds, then the version of the data
//! it belongs to, then the id: user `1` and item `1` never collide, and two model bundles can live
//! side by side (switching or rolling back a bundle never reads the other's embeddings).
//!
//! | key | value |
//! |---|---|
//! | `cascade:emb:u:<bundle>:<user_id>` | user embedding, [`crate::embedding`] value encoding |
//! | `cascade:emb:i:<bundle>:<item_id>` | item embedding, same encoding |
//! | `cascade:recs:<bundle>:{<user_id>}` | precomputed list, JSON [`crate::wire::RecList`] |
//! | `cascade:gen:{<user_id>}` | the user's generation (INCR on a significant event) |
//! | `cascade:bought:{<user_id>}` | set of item ids the user purchased |
//! | `cascade:recent:{<user_id>}` | list of the user's most recent item ids, newest first (session) |
//! | `cascade:l2:<bundle>:{<user_id>}:<segment>:<generation>` | L2 cached list, JSON items |
//! | `cascade:catalogue:state:{catalogue}`, `cascade:catalogue:version:{catalogue}` | the item catalogue (hash) and its version |
//! | `cascade:markers` | hash, one field per bundle loaded into this shard: what `cascade load` wrote there (JSON; never moved) |
//!
//! Ids are validated ([`crate::validate::validate_id`]) so they never contain `:`, `{` or `}`.
//!
//! **Hash tags.** A user's state keys carry the user id in braces, Redis Cluster's hash tag: in a
//! cluster they all hash to the user's slot, so the atomic update of an event (purchase, session,
//! generation in one `MULTI`) is a single-slot transaction, as it is on one independent shard.
//! The catalogue's keys share the tag `{catalogue}` for the same reason. Embedding keys carry no
//! tag (each is read and written on its own, and loaded bundles keep their keys). Jump hashing
//! over independent shards uses the id without the braces, so placement is the same either way.
//! (Key format 2: before it, state keys had no braces; `shard_id_of` still reads both, so
//! `cascade reshard` moves old keys, but a running origin reads only the new ones.)

/// What an embedding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A user (`u`).
    User,
    /// An item (`i`).
    Item,
}

impl EntityKind {
    /// The one-letter tag used in keys.
    pub fn tag(self) -> &'static str {
        match self {
            EntityKind::User => "u",
            EntityKind::Item => "i",
        }
    }
}

/// Key of an embedding.
pub fn embedding_key(kind: EntityKind, bundle: &str, id: &str) -> String {
    format!("{}{id}", embedding_key_prefix(kind, bundle))
}

/// What every embedding key of `kind` in `bundle` starts with: the key is this plus the id (for
/// writers that build many keys into one buffer).
pub fn embedding_key_prefix(kind: EntityKind, bundle: &str) -> String {
    format!("cascade:emb:{}:{bundle}:", kind.tag())
}

/// Key of a user's precomputed list.
pub fn precomputed_key(bundle: &str, user_id: &str) -> String {
    format!("cascade:recs:{bundle}:{{{user_id}}}")
}

/// Key of a user's generation counter.
pub fn generation_key(user_id: &str) -> String {
    format!("cascade:gen:{{{user_id}}}")
}

/// Key of the set of items a user purchased.
pub fn purchases_key(user_id: &str) -> String {
    format!("cascade:bought:{{{user_id}}}")
}

/// Key of a user's recent items (the session), newest first.
pub fn recent_key(user_id: &str) -> String {
    format!("cascade:recent:{{{user_id}}}")
}

/// Key of a user's L2 cached list for one context and generation.
pub fn l2_key(bundle: &str, user_id: &str, segment: &str, generation: u64) -> String {
    format!("cascade:l2:{bundle}:{{{user_id}}}:{segment}:{generation}")
}

/// The hash where `cascade load` marks each shard with what it loaded there: field = bundle id,
/// value = JSON (counts per kind, when). The origin checks it to tell a shard that came back
/// empty (a restarted cache node) or holds another bundle from one whose users are simply new.
pub const MARKERS_KEY: &str = "cascade:markers";

/// The id the catalogue's keys are sharded by: they live on the shard that owns `catalogue`.
pub const CATALOGUE_SHARD_ID: &str = "catalogue";

/// The hash of every catalogue item's state (item id → JSON), shared by the origin processes.
pub fn catalogue_state_key() -> String {
    format!("cascade:catalogue:state:{{{CATALOGUE_SHARD_ID}}}")
}

/// The catalogue's version: every change bumps it; each origin polls it.
pub fn catalogue_version_key() -> String {
    format!("cascade:catalogue:version:{{{CATALOGUE_SHARD_ID}}}")
}

/// Whether a key belongs to one shard rather than to an id (the markers): never moved by a reshard.
pub fn is_shard_local(key: &str) -> bool {
    key == MARKERS_KEY
}

/// Whether a key is a cache or a session that expires by itself (L2 lists, recent items): a
/// reshard moves it if it is still there, but does not count it, since it may vanish mid-run.
pub fn is_volatile(key: &str) -> bool {
    key.starts_with("cascade:l2:") || key.starts_with("cascade:recent:")
}

/// The id a key is sharded by (the user or item it belongs to), or `None` for a key outside the
/// schema. Every key of one user lives on that user's shard, so resharding moves them together.
pub fn shard_id_of(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.strip_prefix("cascade:")?.split(':').collect();
    match parts.as_slice() {
        ["emb", "u" | "i", _, id]
        | ["recs", _, id]
        | ["gen" | "bought" | "recent", id]
        | ["l2", _, id, _, _]
        | ["catalogue", "state" | "version", id] => untag(id),
        _ => None,
    }
}

/// `id` without its hash-tag braces (`{u1}` → `u1`; an untagged id as it is), or `None` when
/// braces are left in it.
fn untag(id: &str) -> Option<&str> {
    let id = id.strip_prefix('{').and_then(|inner| inner.strip_suffix('}')).unwrap_or(id);
    (!id.is_empty() && !id.contains(['{', '}'])).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_names_its_shard_id() {
        let keys = [
            embedding_key(EntityKind::User, "b1", "u.7"),
            embedding_key(EntityKind::Item, "b1", "u.7"),
            precomputed_key("b1", "u.7"),
            generation_key("u.7"),
            purchases_key("u.7"),
            recent_key("u.7"),
            l2_key("b1", "u.7", "home.desktop.us", 3),
        ];
        for key in &keys {
            assert!(!is_shard_local(key), "{key}");
            assert_eq!(is_volatile(key), key.contains(":l2:") || key.contains(":recent:"), "{key}");
            assert_eq!(shard_id_of(key), Some("u.7"), "{key}");
        }
        // A user's state keys share the hash tag {u.7}: one cluster slot for its MULTI.
        for key in &keys[2..] {
            assert!(key.contains("{u.7}"), "{key}");
        }
        // Keys written before hash tags (key format 1) are still read by reshard.
        assert_eq!(shard_id_of("cascade:gen:u.7"), Some("u.7"));
        assert_eq!(shard_id_of("cascade:l2:b1:u.7:home.desktop.us:3"), Some("u.7"));
        for foreign in ["cascade:gen:{u{7}", "cascade:gen:{}", "cascade:gen:u}"] {
            assert_eq!(shard_id_of(foreign), None, "{foreign}");
        }
        for foreign in ["other:emb:u:b:1", "cascade:emb:x:b:1", "cascade:gen", "cascade:l2:b:u:s"] {
            assert_eq!(shard_id_of(foreign), None, "{foreign}");
        }
        // The catalogue's two keys move together, with the id `catalogue`.
        assert_eq!(shard_id_of(&catalogue_state_key()), Some(CATALOGUE_SHARD_ID));
        assert_eq!(shard_id_of(&catalogue_version_key()), Some(CATALOGUE_SHARD_ID));
    }

    #[test]
    fn users_and_items_never_collide() {
        assert_ne!(embedding_key(EntityKind::User, "v1", "1"), embedding_key(EntityKind::Item, "v1", "1"));
        assert_ne!(embedding_key(EntityKind::User, "v1", "1"), embedding_key(EntityKind::User, "v2", "1"));
    }
}
