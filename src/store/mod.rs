//! The redb store: opening the data directory, the single-process lock, migrations, and
//! transaction helpers. One file per aggregate holds that aggregate's records and rules.
//!
//! Invariants: no transaction is held across an `.await` (async callers go through
//! [`Store::read_blocking`]/[`Store::write_blocking`], which run on the blocking pool); a write
//! closure that returns `Err` aborts its transaction, so a refused operation changes nothing.

pub mod accounts;
pub mod apps;
pub mod check;
pub mod codec;
pub mod domains;
pub mod earnings;
pub mod keys;
pub mod ledger;
pub mod migrations;
pub mod orgs;
pub mod payments;
pub mod replay;
pub mod sessions;
pub mod settlements;
pub mod tables;
pub mod usage;
pub mod users;
pub mod webhooks;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

pub use codec::CodecError;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "eliza-cloud.redb";
/// Written by `serve` while it holds the database, so offline commands can name the holder.
pub const SERVER_MARKER_FILE: &str = "server.pid";

#[derive(Debug)]
pub enum StoreError {
    /// Another process (normally a running `serve`) holds the database.
    Locked {
        holder: Option<String>,
    },
    NewerSchema {
        found: u64,
        supported: u64,
    },
    /// A read-only open met a file that was not closed cleanly (a crash): it needs the repair
    /// that a writable open does.
    NeedsRepair,
    /// An offline command met a database an older binary wrote: only `serve` migrates.
    OlderSchema {
        found: u64,
        supported: u64,
    },
    Io(String),
    Db(String),
    Codec(CodecError),
    /// An index points at nothing, or a record is not what its table promises.
    Corrupt(String),
    /// A unique name (slug, wallet, key hash) is taken.
    Conflict(&'static str),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Locked { holder: Some(h) } => {
                write!(
                    f,
                    "the database is in use by a running eliza-cloud server ({h}); stop it first"
                )
            }
            StoreError::Locked { holder: None } => write!(
                f,
                "the database is in use by another eliza-cloud process (a running server?); stop it first"
            ),
            StoreError::NewerSchema { found, supported } => write!(
                f,
                "the database has schema version {found}, newer than this binary supports ({supported}); run a newer eliza-cloud"
            ),
            StoreError::OlderSchema { found, supported } => write!(
                f,
                "the database has schema version {found}, older than this binary's ({supported}); \
                 offline commands never migrate: start `eliza-cloud serve` with this binary once \
                 (after a backup), or use the binary that wrote it"
            ),
            StoreError::NeedsRepair => write!(
                f,
                "the database was not closed cleanly (a crash?) and needs a repair, which this \
                 read-only command never does: start `eliza-cloud serve` once, or run \
                 `eliza-cloud payments pending`, which repairs it on open"
            ),
            StoreError::Io(e) => write!(f, "data directory: {e}"),
            StoreError::Db(e) => write!(f, "database: {e}"),
            StoreError::Codec(e) => write!(f, "stored record: {e}"),
            StoreError::Corrupt(e) => write!(f, "database inconsistency: {e}"),
            StoreError::Conflict(what) => write!(f, "{what} is already taken"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<CodecError> for StoreError {
    fn from(e: CodecError) -> Self {
        StoreError::Codec(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { holder: None },
            other => StoreError::Db(other.to_string()),
        }
    }
}

/// Work registered inside a write transaction to run once it has committed.
#[derive(Default)]
pub struct OnCommit(Vec<Box<dyn FnOnce() + Send>>);

impl OnCommit {
    pub fn push(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(hook));
    }
}

/// The open database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// Creates the data directory with mode 0700 if it is missing; an existing directory is left as
/// the operator made it.
pub fn ensure_data_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    // The umask may have cleared bits we asked for; it can never add any, but be exact.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// redb's page cache, in bytes. redb's default is 1 GiB, which a busy ledger (a debit row per
/// metered call) fills; the appliance keeps its memory bounded instead. Reads past the cache come
/// from the operating system's page cache.
pub const CACHE_BYTES: usize = 64 << 20;

impl Store {
    /// Opens (creating if needed) the database in `dir`, takes the single-process lock, and runs
    /// migrations. A lock held elsewhere is [`StoreError::Locked`], naming the server if it left
    /// its marker file.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        ensure_data_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match StoreError::from(e) {
                StoreError::Locked { .. } => StoreError::Locked {
                    holder: read_server_marker(dir),
                },
                other => other,
            })?;
        // The directory is private already; the file is too, whatever the umask says.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        migrations::migrate(&db)?;
        Ok(Store {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing database of exactly this binary's schema, for the offline commands
    /// that write: they never create a database by accident and never migrate one (SPEC §1).
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        let path = existing_database(dir)?;
        // The version is read through a read-only open first, so a database of another schema
        // is refused before a writable open has touched a byte of it. A file that needs the
        // repair of an unclean shutdown can only be read writable (a repair is not a migration).
        match ReadOnlyStore::open_file(&path, dir) {
            Ok(read_only) => require_current_schema(read_only.schema_version()?)?,
            Err(StoreError::NeedsRepair) => {}
            Err(e) => return Err(e),
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .open(&path)
            .map_err(|e| locked_or(e, dir))?;
        require_current_schema(migrations::stored_version(&db)?)?;
        Ok(Store {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.join(DATABASE_FILE)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `f` in a read transaction.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        f(&txn)
    }

    /// Runs `f` in a write transaction, committed durably if `f` succeeds and aborted otherwise.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_hooked(|txn, _| f(txn))
    }

    /// [`Store::write`] whose closure may register work that must follow the commit (a cache
    /// invalidation, say): the hooks run right after `commit()` succeeded, on the same thread,
    /// so they happen even when whoever awaited the write has gone away (garage's
    /// `Transaction::on_commit`). An aborted or failed transaction runs none.
    pub fn write_hooked<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut OnCommit) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let mut hooks = OnCommit::default();
        match f(&txn, &mut hooks) {
            Ok(value) => {
                txn.commit().map_err(StoreError::from)?;
                for hook in hooks.0 {
                    hook();
                }
                Ok(value)
            }
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::error!(error = %abort, "aborting a write transaction failed");
                }
                Err(e)
            }
        }
    }

    /// [`Store::read`] on the blocking pool, for async handlers.
    pub async fn read_blocking<T, E>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| E::from(StoreError::Db(format!("store task failed: {e}"))))?
    }

    /// [`Store::write`] on the blocking pool, for async handlers.
    pub async fn write_blocking<T, E>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(f))
            .await
            .map_err(|e| E::from(StoreError::Db(format!("store task failed: {e}"))))?
    }

    /// [`Store::write_hooked`] on the blocking pool. The transaction and its hooks run to the end
    /// even if the returned future is dropped.
    pub async fn write_blocking_hooked<T, E>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut OnCommit) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_hooked(f))
            .await
            .map_err(|e| E::from(StoreError::Db(format!("store task failed: {e}"))))?
    }

    /// Answers whether the database serves a read (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        txn.open_table(tables::META)?;
        Ok(())
    }

    /// Writes the marker that names this server for offline commands; removed by
    /// [`Store::remove_server_marker`] at shutdown.
    pub fn write_server_marker(&self, listen: &str) -> Result<(), StoreError> {
        let mut file = fs::File::create(self.dir.join(SERVER_MARKER_FILE))?;
        writeln!(file, "pid {}, listening on {listen}", std::process::id())?;
        Ok(())
    }

    pub fn remove_server_marker(&self) {
        let _ = fs::remove_file(self.dir.join(SERVER_MARKER_FILE));
    }
}

/// The database file of `dir`, which must exist.
fn existing_database(dir: &Path) -> Result<PathBuf, StoreError> {
    let path = dir.join(DATABASE_FILE);
    if !path.is_file() {
        return Err(StoreError::Io(format!(
            "no database at {} (start `eliza-cloud serve` once, or pass --data)",
            path.display()
        )));
    }
    Ok(path)
}

/// A lock error names the server holding the database, if it left its marker.
fn locked_or(e: redb::DatabaseError, dir: &Path) -> StoreError {
    match StoreError::from(e) {
        StoreError::Locked { .. } => StoreError::Locked {
            holder: read_server_marker(dir),
        },
        other => other,
    }
}

fn require_current_schema(found: u64) -> Result<(), StoreError> {
    let supported = migrations::SCHEMA_VERSION;
    match found.cmp(&supported) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(StoreError::NewerSchema { found, supported }),
        std::cmp::Ordering::Less => Err(StoreError::OlderSchema { found, supported }),
    }
}

/// A database opened read-only (`check`, `backup`, the listing commands): nothing is written,
/// nothing migrated, nothing repaired (a file that needs repair after a crash is refused; a
/// start of the server repairs it). Refused while a server holds the file, and a server cannot
/// start while it is open.
pub struct ReadOnlyStore {
    db: redb::ReadOnlyDatabase,
    path: PathBuf,
}

impl ReadOnlyStore {
    /// Opens `dir`'s database as it is, whatever its schema version.
    pub fn open_any_version(dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let path = existing_database(dir)?;
        ReadOnlyStore::open_file(&path, dir)
    }

    /// Opens `dir`'s database, refusing one of another schema version than this binary's.
    pub fn open(dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let store = ReadOnlyStore::open_any_version(dir)?;
        require_current_schema(store.schema_version()?)?;
        Ok(store)
    }

    /// Opens one database file read-only (a backup's copy, say).
    pub fn open_file(path: &Path, marker_dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let db = redb::ReadOnlyDatabase::open(path).map_err(|e| match e {
            redb::DatabaseError::RepairAborted => StoreError::NeedsRepair,
            other => locked_or(other, marker_dir),
        })?;
        Ok(ReadOnlyStore {
            db,
            path: path.to_path_buf(),
        })
    }

    pub fn schema_version(&self) -> Result<u64, StoreError> {
        migrations::stored_version(&self.db)
    }

    pub fn database_path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        f(&txn)
    }
}

fn read_server_marker(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(SERVER_MARKER_FILE)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty() && line.len() < 200).then(|| line.to_string())
}

/// Opening a table for reading from either kind of transaction, so lookups are written once.
pub trait ReadTx {
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<'static, K, V>,
    ) -> Result<impl redb::ReadableTable<K, V> + '_, StoreError>;
}

impl ReadTx for ReadTransaction {
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<'static, K, V>,
    ) -> Result<impl redb::ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }
}

impl ReadTx for WriteTransaction {
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<'static, K, V>,
    ) -> Result<impl redb::ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }
}

/// Reads and decodes one record from a table of encoded values.
pub(crate) fn get_record<'a, K, T>(
    table: &impl redb::ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'a>>,
) -> Result<Option<T>, StoreError>
where
    K: redb::Key + 'static,
    T: serde::de::DeserializeOwned,
{
    match table.get(key)? {
        Some(guard) => Ok(Some(codec::decode(guard.value())?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dir_and_migrates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let store = Store::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = fs::metadata(dir.join(DATABASE_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            migrations::stored_version(store.database()).unwrap(),
            migrations::SCHEMA_VERSION
        );
        store.ping().unwrap();
    }

    #[test]
    fn second_open_in_process_is_locked_and_names_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.write_server_marker("127.0.0.1:3000").unwrap();
        match Store::open(tmp.path()) {
            Err(StoreError::Locked { holder: Some(h) }) => assert!(h.contains("127.0.0.1:3000")),
            other => panic!("expected a lock error, got {other:?}"),
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = Store::open(tmp.path()).unwrap();
            migrations::force_schema_version(store.database(), migrations::SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = Store::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err:?}");
        assert!(err.to_string().contains("newer than this binary"));
    }

    #[test]
    fn failed_write_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let r: Result<(), StoreError> = store.write(|txn| {
            txn.open_table(tables::BALANCES)?.insert(7u128, 5i64)?;
            Err(StoreError::Corrupt("refused".into()))
        });
        assert!(r.is_err());
        let v: Option<i64> = store
            .read(|txn| {
                Ok::<_, StoreError>(
                    txn.open_table(tables::BALANCES)?
                        .get(7u128)?
                        .map(|g| g.value()),
                )
            })
            .unwrap();
        assert_eq!(v, None);
    }
}

/// Property tests: every stored record type survives encode → decode unchanged, and decoding
/// arbitrary bytes never panics.
#[cfg(test)]
mod codec_properties {
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::codec::{decode, encode};
    use super::keys::{ApiKeyRecord, KeyHash, KeyType};
    use super::ledger::{EntryKind, LedgerEntry};
    use super::orgs::{OrgRecord, Plan};
    use super::sessions::SessionRecord;
    use super::users::{Role, UserRecord};

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn org() -> impl Strategy<Value = OrgRecord> {
        (
            uuid(),
            ".{0,40}",
            "[a-z0-9-]{1,50}",
            prop_oneof![Just(Plan::Free), Just(Plan::Pro), Just(Plan::Enterprise)],
            any::<Option<u32>>(),
            any::<bool>(),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(|(id, name, slug, plan, limit, active, c, u)| OrgRecord {
                id,
                name,
                slug,
                plan,
                custom_rate_limit: limit,
                is_active: active,
                created_at: c,
                updated_at: u,
            })
    }

    fn user() -> impl Strategy<Value = UserRecord> {
        (
            (uuid(), uuid(), proptest::option::of(".{0,20}")),
            proptest::option::of("0x[0-9a-f]{40}"),
            proptest::option::of("[1-9A-HJ-NP-Za-km-z]{32,44}"),
            prop_oneof![Just(Role::Owner), Just(Role::Member)],
            any::<bool>(),
            any::<(i64, i64)>(),
        )
            .prop_map(
                |((id, org, name), evm, sol, role, active, (c, u))| UserRecord {
                    id,
                    organization_id: org,
                    name,
                    wallet_address: evm,
                    solana_address: sol,
                    role,
                    is_active: active,
                    created_at: c,
                    updated_at: u,
                },
            )
    }

    fn api_key() -> impl Strategy<Value = ApiKeyRecord> {
        (
            (uuid(), uuid(), uuid(), proptest::option::of(uuid())),
            (
                ".{1,30}",
                proptest::option::of(".{0,60}"),
                "[a-z_A-Z0-9]{12}",
            ),
            any::<[u8; 32]>(),
            prop_oneof![Just(KeyType::Live), Just(KeyType::Test)],
            proptest::collection::vec("[a-z]{1,10}(:read|:write)?", 0..5),
            any::<Option<u32>>(),
            (any::<bool>(), any::<u64>(), any::<Option<i64>>()),
            (any::<i64>(), any::<i64>(), any::<Option<i64>>()),
        )
            .prop_map(
                |(
                    (id, org, user, app),
                    (name, description, prefix),
                    hash,
                    key_type,
                    permissions,
                    rate_limit,
                    (active, usage, last),
                    (c, u, exp),
                )| ApiKeyRecord {
                    id,
                    organization_id: org,
                    user_id: user,
                    app_id: app,
                    name,
                    description,
                    key_prefix: prefix,
                    key_hash: KeyHash(hash),
                    key_type,
                    permissions,
                    rate_limit,
                    is_active: active,
                    usage_count: usage,
                    last_used_at: last,
                    created_at: c,
                    updated_at: u,
                    expires_at: exp,
                },
            )
    }

    fn session() -> impl Strategy<Value = SessionRecord> {
        (
            any::<[u8; 32]>(),
            uuid(),
            uuid(),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(|(hash, user, org, c, e)| SessionRecord {
                token_hash: KeyHash(hash),
                user_id: user,
                organization_id: org,
                created_at: c,
                expires_at: e,
            })
    }

    fn ledger_entry() -> impl Strategy<Value = LedgerEntry> {
        (
            (uuid(), uuid(), any::<u64>(), any::<i64>()),
            prop_oneof![
                Just(EntryKind::Credit),
                Just(EntryKind::Debit),
                Just(EntryKind::Refund)
            ],
            (".{0,40}", ".{1,60}"),
            proptest::collection::vec((".{0,10}", ".{0,10}"), 0..4),
            any::<i64>(),
        )
            .prop_map(
                |((id, org, seq, amount), kind, (description, key), metadata, c)| LedgerEntry {
                    id,
                    organization_id: org,
                    seq,
                    amount_micros: amount,
                    kind,
                    description,
                    idempotency_key: key,
                    metadata,
                    created_at: c,
                },
            )
    }

    proptest! {
        #[test]
        fn org_round_trips(r in org()) {
            prop_assert_eq!(decode::<OrgRecord>(&encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn user_round_trips(r in user()) {
            prop_assert_eq!(decode::<UserRecord>(&encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn api_key_round_trips(r in api_key()) {
            prop_assert_eq!(decode::<ApiKeyRecord>(&encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn session_round_trips(r in session()) {
            prop_assert_eq!(decode::<SessionRecord>(&encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn payment_record_round_trips(
            (org, entry) in (uuid(), uuid()),
            (payer, network, tx) in (".{0,42}", "[a-z-]{1,20}", ".{0,66}"),
            (amount, created) in (any::<i64>(), any::<i64>()),
        ) {
            let r = crate::store::payments::PaymentRecord {
                organization_id: org,
                payer,
                network,
                amount_micros: amount,
                transaction: tx,
                ledger_entry_id: entry,
                created_at: created,
            };
            prop_assert_eq!(decode::<crate::store::payments::PaymentRecord>(&encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn ledger_entry_round_trips(r in ledger_entry()) {
            prop_assert_eq!(decode::<LedgerEntry>(&encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<OrgRecord>(&bytes);
            let _ = decode::<UserRecord>(&bytes);
            let _ = decode::<ApiKeyRecord>(&bytes);
            let _ = decode::<SessionRecord>(&bytes);
            let _ = decode::<LedgerEntry>(&bytes);
        }
    }
}
