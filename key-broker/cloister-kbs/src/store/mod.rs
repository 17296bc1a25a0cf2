//! Storage: one small [`ResourceStore`] trait and three implementations.
//!
//! * [`FsStore`] (the embedded default): one file per record under `<root>/<namespace>/`, file
//!   name = hex of the key. Durable writes go to a temporary file in the same directory, are
//!   `fsync`ed, renamed over the old record and the directory is `fsync`ed, so a `kill -9` or
//!   power loss leaves either the old or the new value, never a torn one; a write is
//!   acknowledged only after that. Relaxed writes (sessions) skip the `fsync`s but stay atomic.
//!   Several processes may share one root (that is how replicas share sessions).
//! * [`PgStore`] (`storage_type = "Postgres"`): PostgreSQL, for replicas that share one
//!   database; values sealed with AES-256-GCM (see [`postgres`]).
//! * [`MemoryStore`]: for tests and throw-away development servers.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::error::StoreError;

pub mod postgres;
pub use postgres::{PgOptions, PgStore};

/// Record families (trustee's key-value namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Resources, key `repo/type/tag`.
    Repository,
    /// The resource policy (key `resource-policy`).
    Kbs,
    /// Attestation policies by id.
    AttestationPolicy,
    /// Reference values by name.
    ReferenceValue,
    /// Protocol sessions by id.
    Session,
    /// The broker's own key material when replicas share it through the store (token signer,
    /// generated admin public key).
    Keys,
}

impl Namespace {
    /// Directory / namespace name.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Repository => "repository",
            Namespace::Kbs => "kbs",
            Namespace::AttestationPolicy => "attestation_service_policy",
            Namespace::ReferenceValue => "reference_value",
            Namespace::Session => "kbs_protocol_session",
            Namespace::Keys => "kbs_keys",
        }
    }

    /// The namespace called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    const ALL: [Namespace; 6] = [
        Namespace::Repository,
        Namespace::Kbs,
        Namespace::AttestationPolicy,
        Namespace::ReferenceValue,
        Namespace::Session,
        Namespace::Keys,
    ];
}

/// How hard a write must try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives power loss once `put` returns.
    Durable,
    /// Atomic, but may be lost on a crash (sessions).
    Relaxed,
}

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 120;

/// A fingerprint of one version of a record, cheaper to take than reading it: equal stamps
/// mean the record was not replaced in between, so what was derived from it still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp([u64; 7]);

impl Stamp {
    /// The stamp of a record that does not exist.
    pub const ABSENT: Stamp = Stamp([0; 7]);
}

/// A key-value store of byte records.
pub trait ResourceStore: Send + Sync + 'static {
    /// Reads a record.
    fn get(&self, ns: Namespace, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// The [`Stamp`] of the record's current version, or `None` when the store has no cheap
    /// one (callers then read the record).
    fn stamp(&self, ns: Namespace, key: &str) -> Result<Option<Stamp>, StoreError> {
        let _ = (ns, key);
        Ok(None)
    }
    /// Creates or replaces a record.
    fn put(&self, ns: Namespace, key: &str, value: &[u8], durability: Durability) -> Result<(), StoreError>;
    /// Deletes a record; `false` if it did not exist.
    fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError>;
    /// All keys of a namespace.
    fn list(&self, ns: Namespace) -> Result<Vec<String>, StoreError>;
    /// Creates a record durably unless one exists: `true` if this call created it. Used where
    /// replicas race to generate shared material once.
    fn create(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Deletes the records of `ns` not written for more than `age_secs`, if the store tracks
    /// write times: `Some((deleted, remaining))`; `None` when it does not (callers then read
    /// the records to decide).
    fn sweep_untouched(&self, ns: Namespace, age_secs: u64) -> Result<Option<(usize, usize)>, StoreError> {
        let _ = (ns, age_secs);
        Ok(None)
    }
    /// Whether the store can serve requests now (`/healthz`).
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether operations wait on the network: async callers then move them to a blocking pool.
    fn is_remote(&self) -> bool {
        false
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::BadKey(key.chars().take(40).collect()));
    }
    Ok(())
}

/// The on-disk store.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    counter: AtomicU64,
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), error: e.to_string() }
}

impl FsStore {
    /// Opens (creating) a store rooted at `root`; leftover temporary files of interrupted writes
    /// are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for ns in Namespace::ALL {
            let dir = root.join(ns.name());
            fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for entry in fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
                let name = entry.file_name();
                // Only ours: ".tmp-" files older than a minute (another replica may be writing).
                if name.to_string_lossy().starts_with(".tmp-")
                    && entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age.as_secs() > 60)
                {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self { root, counter: AtomicU64::new(0) })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, ns: Namespace, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(ns.name()).join(hex::encode(key.as_bytes())))
    }

    /// Writes `value` to a fresh temporary file in `dir` (synced when durable).
    fn write_tmp(&self, dir: &Path, value: &[u8], durability: Durability) -> Result<PathBuf, StoreError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| io(&tmp, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| io(&tmp, e))?;
            }
            f.write_all(value).map_err(|e| io(&tmp, e))?;
            if durability == Durability::Durable {
                f.sync_all().map_err(|e| io(&tmp, e))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

impl ResourceStore for FsStore {
    fn get(&self, ns: Namespace, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let path = self.path(ns, key)?;
        match fs::read(&path) {
            Ok(v) => Ok(Some(Zeroizing::new(v))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// One `stat`: device, inode, length, modification and change times. Every write renames a
    /// fresh file over the record (another inode, a new change time), so a replaced record never
    /// keeps its stamp, whichever process replaced it.
    fn stamp(&self, ns: Namespace, key: &str) -> Result<Option<Stamp>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(ns, key)?;
        match fs::metadata(&path) {
            // Two's-complement bits of the (signed) times: only equality matters.
            Ok(m) => Ok(Some(Stamp([
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ]))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Stamp::ABSENT)),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn put(&self, ns: Namespace, key: &str, value: &[u8], durability: Durability) -> Result<(), StoreError> {
        let path = self.path(ns, key)?;
        let dir = self.root.join(ns.name());
        let tmp = self.write_tmp(&dir, value, durability)?;
        let result = (|| {
            fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            if durability == Durability::Durable {
                sync_dir(&dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn create(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let path = self.path(ns, key)?;
        let dir = self.root.join(ns.name());
        let tmp = self.write_tmp(&dir, value, Durability::Durable)?;
        // A hard link fails if the name exists: exactly one creator wins, and the record
        // appears complete (it was synced before being linked).
        let result = match fs::hard_link(&tmp, &path) {
            Ok(()) => sync_dir(&dir).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(&path, e)),
        };
        let _ = fs::remove_file(&tmp);
        result
    }

    fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        let path = self.path(ns, key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.root.join(ns.name()))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn list(&self, ns: Namespace) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(ns.name());
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if let Some(k) = hex::decode(name.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok()) {
                out.push(k);
            }
        }
        out.sort();
        Ok(out)
    }
}

type Records = HashMap<(Namespace, String), Zeroizing<Vec<u8>>>;

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<Records>,
}

impl ResourceStore for MemoryStore {
    fn get(&self, ns: Namespace, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        check_key(key)?;
        let map = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(map.get(&(ns, key.to_owned())).cloned())
    }

    fn put(&self, ns: Namespace, key: &str, value: &[u8], _: Durability) -> Result<(), StoreError> {
        check_key(key)?;
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert((ns, key.to_owned()), Zeroizing::new(value.to_vec()));
        Ok(())
    }

    fn create(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        check_key(key)?;
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.entry((ns, key.to_owned())) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(false),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Zeroizing::new(value.to_vec()));
                Ok(true)
            }
        }
    }

    fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(map.remove(&(ns, key.to_owned())).is_some())
    }

    fn list(&self, ns: Namespace) -> Result<Vec<String>, StoreError> {
        let map = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<String> = map.keys().filter(|(n, _)| *n == ns).map(|(_, k)| k.clone()).collect();
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &dyn ResourceStore) {
        assert!(s.get(Namespace::Repository, "a/b/c").unwrap().is_none());
        s.put(Namespace::Repository, "a/b/c", b"one", Durability::Durable).unwrap();
        s.put(Namespace::Repository, "a/b/c", b"two", Durability::Relaxed).unwrap();
        assert_eq!(&s.get(Namespace::Repository, "a/b/c").unwrap().unwrap()[..], b"two");
        assert!(s.get(Namespace::Kbs, "a/b/c").unwrap().is_none());
        assert_eq!(s.list(Namespace::Repository).unwrap(), vec!["a/b/c".to_owned()]);
        assert!(s.delete(Namespace::Repository, "a/b/c").unwrap());
        assert!(!s.delete(Namespace::Repository, "a/b/c").unwrap());
        assert!(s.create(Namespace::Keys, "k", b"first").unwrap());
        assert!(!s.create(Namespace::Keys, "k", b"second").unwrap());
        assert_eq!(&s.get(Namespace::Keys, "k").unwrap().unwrap()[..], b"first");
        assert!(s.delete(Namespace::Keys, "k").unwrap());
        assert!(s.put(Namespace::Kbs, "", b"x", Durability::Durable).is_err());
        assert!(s.put(Namespace::Kbs, &"k".repeat(MAX_KEY_LEN + 1), b"x", Durability::Durable).is_err());
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn fs_store_and_two_handles_share_records() {
        let dir = tempfile::tempdir().unwrap();
        let a = FsStore::open(dir.path()).unwrap();
        exercise(&a);
        let b = FsStore::open(dir.path()).unwrap();
        a.put(Namespace::Session, "s1", b"x", Durability::Relaxed).unwrap();
        assert_eq!(&b.get(Namespace::Session, "s1").unwrap().unwrap()[..], b"x");
        // Keys are hex-encoded: path tricks stay inside the namespace directory.
        a.put(Namespace::ReferenceValue, "../../etc/x", b"y", Durability::Durable).unwrap();
        assert_eq!(a.list(Namespace::ReferenceValue).unwrap(), vec!["../../etc/x".to_owned()]);
        assert!(dir.path().join("reference_value").read_dir().unwrap().count() == 1);
    }

    #[test]
    fn fs_stamps_change_with_every_write_from_any_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (FsStore::open(dir.path()).unwrap(), FsStore::open(dir.path()).unwrap());
        let stamp = |s: &FsStore| s.stamp(Namespace::Kbs, "policy").unwrap().unwrap();
        assert_eq!(stamp(&a), Stamp::ABSENT);
        a.put(Namespace::Kbs, "policy", b"one", Durability::Durable).unwrap();
        let first = stamp(&a);
        assert_ne!(first, Stamp::ABSENT);
        assert_eq!(stamp(&b), first, "untouched: the same stamp from every handle");
        // The same bytes written again are still another version.
        b.put(Namespace::Kbs, "policy", b"one", Durability::Durable).unwrap();
        let second = stamp(&a);
        assert_ne!(second, first);
        b.delete(Namespace::Kbs, "policy").unwrap();
        assert_eq!(stamp(&a), Stamp::ABSENT);
        assert_eq!(MemoryStore::default().stamp(Namespace::Kbs, "policy").unwrap(), None);
    }
}
