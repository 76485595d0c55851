//! API keys: who may do what.
//!
//! A request carries `Authorization: Bearer <key>`. The key is either the
//! configured admin key (`FLOE_ADMIN_KEY`) or one minted through the
//! admin routes: `floe_<id>_<secret>`, whose record (`keys/<id>.json` in
//! the object store, where every function can read it) holds its grant
//! and the SHA-256 of its secret, never the secret itself. Secrets are 256
//! random bits, so a plain hash cannot be brute-forced and needs no salt;
//! hashes are compared in constant time.
//!
//! Each process caches key records for `key_cache_secs`, so a revoked key
//! stops working everywhere within that delay. Ids with no record are
//! cached apart (so a flood of made-up ids cannot evict real keys), and
//! looking up ids not seen before is limited to [`MISS_LOOKUPS_PER_SEC`]
//! object-store reads: beyond it they are refused without a read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthSettings;
use crate::error::{Error, Result};
use crate::storage::{api_key, api_keys_root, get_bytes};

/// What a key may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List and describe collections, query, read rows, warm the cache.
    Read,
    /// And upsert, delete and flush.
    Write,
    /// And create and drop collections; unrestricted admin keys also
    /// manage keys.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// `role` on collection `name`.
    Collection(Role, &'a str),
    /// `role` on some collection (listing: the answer is filtered).
    Any(Role),
    /// `role` on every collection: key management, `/metrics`.
    Everything(Role),
}

/// What a key allows: a role, on every collection or on those named
/// (exact names, or prefixes ending in `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// `None`: every collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
}

impl Grant {
    /// Everything: the admin key, or every request when keys are off.
    pub fn everything() -> Grant {
        Grant {
            role: Role::Admin,
            collections: None,
        }
    }

    /// Whether the grant covers collection `name`.
    pub fn covers(&self, name: &str) -> bool {
        match &self.collections {
            None => true,
            Some(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            }),
        }
    }

    /// Allows `need`, or says why not (a 403).
    pub fn allow(&self, need: Need<'_>) -> Result<()> {
        let (role, what) = match need {
            Need::Collection(_, name) if !self.covers(name) => {
                return Err(Error::Forbidden(format!(
                    "this key does not cover collection {name:?}"
                )));
            }
            Need::Collection(role, name) => (role, format!("collection {name:?}")),
            Need::Any(role) => (role, "any collection".to_string()),
            Need::Everything(role) if self.collections.is_some() => {
                return Err(Error::Forbidden(format!(
                    "this needs a {} key for every collection; this key is limited to {:?}",
                    role.name(),
                    self.collections.as_deref().unwrap_or_default()
                )));
            }
            Need::Everything(role) => (role, "every collection".to_string()),
        };
        if self.role < role {
            return Err(Error::Forbidden(format!(
                "this needs the {} role on {what}; the key has {}",
                role.name(),
                self.role.name()
            )));
        }
        Ok(())
    }

    /// Checks a requested grant, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let Some(patterns) = &self.collections else {
            return Ok(());
        };
        if patterns.is_empty() {
            return Err(Error::invalid(
                "collections",
                "must name at least one collection or prefix (leave it out for every collection)",
            ));
        }
        for (i, p) in patterns.iter().enumerate() {
            let name = p.strip_suffix('*').unwrap_or(p);
            // A bare "*" is every collection; a prefix may be a name's start.
            let ok = name.is_empty()
                || name.len() <= crate::catalog::MAX_NAME_LEN
                    && name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
            if !ok || (name.is_empty() && !p.ends_with('*')) {
                return Err(Error::invalid(
                    format!("collections[{i}]"),
                    format!(
                        "{p:?} is neither a collection name nor a prefix ending in '*' (a-z, 0-9, '_', '-')"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A key as stored (`keys/<id>.json`) and as listed (without the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Its id, the public part of the key.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// What it allows.
    #[serde(flatten)]
    pub grant: Grant,
    /// When it was created (ms since the epoch).
    pub created_at_ms: u64,
    /// When it was revoked; it no longer works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    info: KeyInfo,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
}

/// A new key: the only time its secret is seen.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    /// The key to send as `Authorization: Bearer <key>`.
    pub key: String,
    /// Its record.
    #[serde(flatten)]
    pub info: KeyInfo,
}

const PREFIX: &str = "floe_";
/// Ids remembered as having no record, at most; beyond it they are forgotten.
const MAX_MISSING: usize = 10_000;
/// Object-store reads per second for ids neither cached nor known missing.
pub const MISS_LOOKUPS_PER_SEC: u32 = 50;

/// The key check of one process: the admin key, and a cache of the
/// stored keys' records in front of the object store.
pub struct Keys {
    store: Arc<dyn ObjectStore>,
    admin_sha256: Option<[u8; 32]>,
    ttl: Duration,
    found: Mutex<HashMap<String, (Instant, Arc<StoredKey>)>>,
    missing: Mutex<HashMap<String, Instant>>,
    /// Reads of unseen ids in the current second: (second's start, count).
    lookups: Mutex<(Instant, u32)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("enabled", &self.enabled())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Keys {
    /// The check `settings` ask for, over the keys stored in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, settings: &AuthSettings) -> Keys {
        Keys {
            store,
            admin_sha256: settings
                .admin_key
                .as_ref()
                .map(|k| sha256(k.expose().as_bytes())),
            ttl: Duration::from_secs(settings.key_cache_secs),
            found: Mutex::default(),
            missing: Mutex::default(),
            lookups: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Whether requests need a key (an admin key is configured).
    pub fn enabled(&self) -> bool {
        self.admin_sha256.is_some()
    }

    /// The grant of a request's `Authorization` header value (`None`:
    /// absent). With keys off, every request may do everything.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Grant> {
        let Some(admin) = &self.admin_sha256 else {
            return Ok(Grant::everything());
        };
        let Some(header) = authorization else {
            return Err(Error::Unauthenticated(
                "this server needs an API key: send Authorization: Bearer <key>".into(),
            ));
        };
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(Error::Unauthenticated(
                    "the Authorization header must be \"Bearer <key>\"".into(),
                ));
            }
        };
        let bad = || Error::Unauthenticated("the API key is not valid".into());
        if bool::from(sha256(token.as_bytes()).ct_eq(admin)) {
            return Ok(Grant::everything());
        }
        let (id, secret) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or_else(bad)?;
        if !is_key_id(id) {
            return Err(bad());
        }
        let stored = self.lookup(id).await?.ok_or_else(bad)?;
        // Both sides are 64 hex digits: compared whole, in constant time.
        let presented = hex(&sha256(secret.as_bytes()));
        if !bool::from(presented.as_bytes().ct_eq(stored.secret_sha256.as_bytes())) {
            return Err(bad());
        }
        if stored.info.revoked_at_ms.is_some() {
            return Err(Error::Unauthenticated("the API key was revoked".into()));
        }
        Ok(stored.info.grant.clone())
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<StoredKey>>> {
        let fresh = |at: &Instant| at.elapsed() < self.ttl;
        if let Some((at, stored)) = lock(&self.found).get(id)
            && fresh(at)
        {
            return Ok(Some(Arc::clone(stored)));
        }
        let known = lock(&self.found).contains_key(id);
        if !known {
            if lock(&self.missing).get(id).is_some_and(fresh) {
                return Ok(None);
            }
            let mut lookups = lock(&self.lookups);
            if lookups.0.elapsed() >= Duration::from_secs(1) {
                *lookups = (Instant::now(), 0);
            }
            if lookups.1 >= MISS_LOOKUPS_PER_SEC {
                return Ok(None);
            }
            lookups.1 += 1;
        }
        let stored = match get_bytes(self.store.as_ref(), &api_key(id)).await {
            Ok(bytes) => Some(Arc::new(parse(id, &bytes)?)),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        self.remember(id, stored.clone());
        Ok(stored)
    }

    fn remember(&self, id: &str, stored: Option<Arc<StoredKey>>) {
        match stored {
            Some(stored) => {
                lock(&self.missing).remove(id);
                lock(&self.found).insert(id.to_string(), (Instant::now(), stored));
            }
            None => {
                lock(&self.found).remove(id);
                let mut missing = lock(&self.missing);
                if missing.len() >= MAX_MISSING {
                    missing.clear();
                }
                missing.insert(id.to_string(), Instant::now());
            }
        }
    }

    /// Mints a key with `grant`.
    pub async fn create(&self, name: &str, grant: Grant) -> Result<NewKey> {
        grant.validate()?;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "must be 1 to 128 characters, none of them control characters",
            ));
        }
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        let id = hex(&id);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let stored = StoredKey {
            info: KeyInfo {
                id: id.clone(),
                name: name.to_string(),
                grant,
                created_at_ms: crate::clock::now_ms(),
                revoked_at_ms: None,
            },
            secret_sha256: hex(&sha256(secret.as_bytes())),
        };
        self.write(&stored).await?;
        Ok(NewKey {
            key: format!("{PREFIX}{id}_{secret}"),
            info: stored.info,
        })
    }

    /// Every stored key, revoked ones included, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        use futures::TryStreamExt;
        let root = api_keys_root();
        let metas: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        let mut keys = Vec::new();
        for meta in metas {
            let Some(id) = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
            else {
                continue;
            };
            match get_bytes(self.store.as_ref(), &meta.location).await {
                Ok(bytes) => keys.push(parse(id, &bytes)?.info),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(keys)
    }

    /// Revokes key `id` (its record stays, marked). Other processes stop
    /// accepting it once their cached record expires.
    pub async fn revoke(&self, id: &str) -> Result<KeyInfo> {
        let not_found = || Error::KeyNotFound(id.to_string());
        if !is_key_id(id) {
            return Err(not_found());
        }
        let mut stored = match get_bytes(self.store.as_ref(), &api_key(id)).await {
            Ok(bytes) => parse(id, &bytes)?,
            Err(e) if e.is_not_found() => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if stored.info.revoked_at_ms.is_none() {
            stored.info.revoked_at_ms = Some(crate::clock::now_ms());
            self.write(&stored).await?;
        }
        Ok(stored.info)
    }

    async fn write(&self, stored: &StoredKey) -> Result<()> {
        let path = api_key(&stored.info.id);
        let bytes = serde_json::to_vec_pretty(stored)
            .map_err(|e| Error::internal("encoding a key record", e))?;
        self.store
            .put(&path, PutPayload::from(Bytes::from(bytes)))
            .await
            .map_err(|e| Error::store("put", &path, e))?;
        self.remember(&stored.info.id, Some(Arc::new(stored.clone())));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A key id as minted: 16 lower-case hex digits.
fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse(id: &str, bytes: &[u8]) -> Result<StoredKey> {
    let stored: StoredKey =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("key record {id}"), e))?;
    if stored.info.id != id || stored.secret_sha256.len() != 64 {
        return Err(Error::corrupt(
            format!("key record {id}"),
            "its id or hash does not match",
        ));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, collections: Option<&[&str]>) -> Grant {
        Grant {
            role,
            collections: collections.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn roles_include_the_ones_below_and_patterns_limit_collections() {
        let g = grant(Role::Write, Some(&["docs", "tenant-a-*"]));
        assert!(g.allow(Need::Collection(Role::Read, "docs")).is_ok());
        assert!(g.allow(Need::Collection(Role::Write, "tenant-a-x")).is_ok());
        assert!(g.allow(Need::Collection(Role::Admin, "docs")).is_err());
        assert!(g.allow(Need::Collection(Role::Read, "docs2")).is_err());
        assert!(g.allow(Need::Collection(Role::Read, "tenant-b")).is_err());
        assert!(g.allow(Need::Any(Role::Read)).is_ok());
        assert!(g.allow(Need::Everything(Role::Read)).is_err());
        let all = grant(Role::Read, None);
        assert!(all.allow(Need::Everything(Role::Read)).is_ok());
        assert!(all.allow(Need::Everything(Role::Admin)).is_err());
        assert!(
            Grant::everything()
                .allow(Need::Everything(Role::Admin))
                .is_ok()
        );
    }

    #[test]
    fn bad_patterns_name_the_field() {
        for (patterns, field) in [
            (vec![], "collections"),
            (vec!["ok", "Bad"], "collections[1]"),
            (vec!["a*b"], "collections[0]"),
        ] {
            let g = grant(Role::Read, Some(&patterns));
            match g.validate() {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{patterns:?}: {other:?}"),
            }
        }
        assert!(
            grant(Role::Read, Some(&["*", "x-*", "y"]))
                .validate()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn minted_keys_work_until_revoked_and_nothing_else_does() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let settings = AuthSettings {
            admin_key: Some("admin-key-for-tests-0001".to_string().into()),
            key_cache_secs: 0,
            ..Default::default()
        };
        let keys = Keys::new(Arc::clone(&store), &settings);
        let unauthenticated = |r: Result<Grant>| matches!(r, Err(Error::Unauthenticated(_)));
        assert!(unauthenticated(keys.authenticate(None).await));
        assert!(unauthenticated(
            keys.authenticate(Some("Bearer nope")).await
        ));
        assert!(unauthenticated(keys.authenticate(Some("Basic abc")).await));
        let admin = keys
            .authenticate(Some("Bearer admin-key-for-tests-0001"))
            .await
            .unwrap();
        assert_eq!(admin, Grant::everything());
        let new = keys
            .create("reader", grant(Role::Read, Some(&["docs"])))
            .await
            .unwrap();
        let header = format!("Bearer {}", new.key);
        let got = keys.authenticate(Some(&header)).await.unwrap();
        assert_eq!(got, grant(Role::Read, Some(&["docs"])));
        // The stored record holds no secret.
        let record = get_bytes(store.as_ref(), &api_key(&new.info.id))
            .await
            .unwrap();
        // (Past the id: the secret's own alphabet has `_`.)
        let secret = new
            .key
            .strip_prefix(&format!("floe_{}_", new.info.id))
            .unwrap();
        assert!(secret.len() >= 40, "{}", new.key);
        assert!(!String::from_utf8_lossy(&record).contains(secret));
        // A wrong secret for a real id fails.
        let forged = format!("Bearer floe_{}_{}", new.info.id, "x".repeat(43));
        assert!(unauthenticated(keys.authenticate(Some(&forged)).await));
        assert_eq!(keys.list().await.unwrap().len(), 1);
        keys.revoke(&new.info.id).await.unwrap();
        assert!(unauthenticated(keys.authenticate(Some(&header)).await));
        // Another process sees the revocation once its cache expires (here at once).
        let other = Keys::new(store, &settings);
        assert!(unauthenticated(other.authenticate(Some(&header)).await));
        assert!(keys.list().await.unwrap()[0].revoked_at_ms.is_some());
    }

    #[tokio::test]
    async fn made_up_ids_cost_a_bounded_number_of_reads_and_evict_no_real_key() {
        let store = Arc::new(crate::storage::CountingStore::new(Arc::new(
            object_store::memory::InMemory::new(),
        )));
        let settings = AuthSettings {
            admin_key: Some("admin-key-for-tests-0001".to_string().into()),
            key_cache_secs: 3600,
            ..Default::default()
        };
        let keys = Keys::new(Arc::clone(&store) as Arc<dyn ObjectStore>, &settings);
        let real = keys.create("real", grant(Role::Read, None)).await.unwrap();
        let real = format!("Bearer {}", real.key);
        let before = store.stats().gets;
        let started = Instant::now();
        for i in 0..(3 * MAX_MISSING as u64) {
            let fake = format!("Bearer floe_{i:016x}_secret");
            assert!(keys.authenticate(Some(&fake)).await.is_err());
        }
        let reads = store.stats().gets - before;
        // The budget per one-second window; a span of L seconds meets at
        // most floor(L) + 2 of them.
        let windows = started.elapsed().as_secs() + 2;
        assert!(
            reads <= windows * u64::from(MISS_LOOKUPS_PER_SEC),
            "{reads} reads in {windows} s"
        );
        let before = store.stats().gets;
        assert!(keys.authenticate(Some(&real)).await.is_ok());
        assert_eq!(store.stats().gets, before, "the real key was evicted");
        // Upper-case ids are not ids.
        let upper = format!("Bearer floe_{}_x", "ABCDEF0123456789");
        assert!(keys.authenticate(Some(&upper)).await.is_err());
    }
}
