//! The offline subcommands (`keys`, `orgs`, `check`, `backup`, `version`). They open the same
//! data directory as `serve`; redb's file lock means that while a server holds it they fail
//! with exit code 2 and a message naming the server, before changing anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::auth::api_key::generate_key;
use crate::bootstrap::OPERATOR_ORG_SLUG;
use crate::cli::*;
use crate::config::offline_data_dir;
use crate::money::{format_dollars, parse_dollars};
use crate::store::keys::{
    ApiKeyRecord, KeyType, delete_key, insert_key, list_keys, list_keys_of_org,
};
use crate::store::ledger::{
    EntryKind, LedgerError, NewEntry, balance_of, list_entries, post_entry,
};
use crate::store::orgs::{OrgRecord, Plan, find_org, list_orgs, update_org};
use crate::store::users::{list_users_of_org, owner_of_org};
use crate::store::{ReadOnlyStore, ReadTx, Store, StoreError, check, migrations};
use crate::time::{Clock, SystemClock, Timestamp};

/// Exit codes: 1 for a failure or a check violation, 2 when a server holds the database.
#[derive(Debug)]
pub enum CommandError {
    Locked(String),
    Failed(String),
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Locked(_) => 2,
            CommandError::Failed(_) => 1,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CommandError::Locked(m) | CommandError::Failed(m) => m,
        }
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Locked { .. } => CommandError::Locked(e.to_string()),
            other => CommandError::Failed(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CommandError {
    fn from(e: std::io::Error) -> Self {
        CommandError::Failed(format!("cannot write output: {e}"))
    }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The database for a command that writes: it must exist and be of this binary's schema.
fn open_writable(data: &Option<String>, env: Env) -> Result<Store, CommandError> {
    Ok(Store::open_existing(&offline_data_dir(data, env))?)
}

/// The database for a command that only reads: opened read-only, never migrated.
fn open_read_only(data: &Option<String>, env: Env) -> Result<ReadOnlyStore, CommandError> {
    Ok(ReadOnlyStore::open(&offline_data_dir(data, env))?)
}

fn org_or_fail(txn: &impl ReadTx, id_or_slug: &str) -> Result<OrgRecord, CommandError> {
    find_org(txn, id_or_slug)?
        .ok_or_else(|| CommandError::Failed(format!("no organization {id_or_slug:?}")))
}

fn time(millis: i64) -> String {
    Timestamp(millis).to_rfc3339()
}

pub fn keys(args: KeysArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        KeysCommand::Generate(a) => {
            let key_type = parse_key_type(&a.key_type)?;
            writeln!(out, "{}", generate_key(key_type).expose())?;
            Ok(())
        }
        KeysCommand::Create(a) => keys_create(a, env, out),
        KeysCommand::List(a) => keys_list(a, env, out),
        KeysCommand::Revoke(a) => keys_revoke(a, env, out),
    }
}

fn parse_key_type(text: &str) -> Result<KeyType, CommandError> {
    KeyType::parse(text)
        .ok_or_else(|| CommandError::Failed(format!("--type {text:?}: use live or test")))
}

fn keys_create(args: KeysCreateArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let key_type = parse_key_type(&args.key_type)?;
    let name = args.name.unwrap_or_else(|| "CLI key".into());
    if name.is_empty() || name.chars().count() > 100 {
        return Err(CommandError::Failed(
            "--name must be 1 to 100 characters".into(),
        ));
    }
    let store = open_writable(&args.data, env)?;
    let org_ref = args.org.unwrap_or_else(|| OPERATOR_ORG_SLUG.into());
    let now = SystemClock.now().millis();
    let plain = generate_key(key_type);
    let record = store.write(|txn| {
        let org = org_or_fail(txn, &org_ref)?;
        let owner = owner_of_org(txn, org.id)?.ok_or_else(|| {
            CommandError::Failed(format!("organization {} has no owner user", org.slug))
        })?;
        let record = ApiKeyRecord::fresh(
            org.id,
            owner.id,
            name,
            key_type,
            plain.display_prefix(),
            plain.hash(),
            now,
        );
        insert_key(txn, &record)?;
        Ok::<_, CommandError>(record)
    })?;
    writeln!(out, "{}", plain.expose())?;
    eprintln!(
        "created key {} ({}) for organization {}; it will not be shown again",
        record.id, record.key_prefix, org_ref
    );
    Ok(())
}

fn keys_list(args: KeysListArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let store = open_read_only(&args.data, env)?;
    let keys = store.read(|txn| match &args.org {
        Some(org) => {
            let org = org_or_fail(txn, org)?;
            Ok::<_, CommandError>(list_keys_of_org(txn, org.id)?)
        }
        None => Ok(list_keys(txn)?),
    })?;
    writeln!(
        out,
        "id\torganization_id\tprefix\ttype\tactive\tname\tcreated_at"
    )?;
    for k in keys {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            k.id,
            k.organization_id,
            k.key_prefix,
            k.key_type.as_str(),
            k.is_active,
            k.name,
            time(k.created_at)
        )?;
    }
    Ok(())
}

fn keys_revoke(args: KeysRevokeArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let id = Uuid::parse_str(&args.id)
        .map_err(|_| CommandError::Failed(format!("{:?} is not a key id", args.id)))?;
    let store = open_writable(&args.data, env)?;
    let removed = store.write(|txn| delete_key(txn, id))?;
    match removed {
        Some(k) => {
            writeln!(out, "revoked {} ({})", k.id, k.key_prefix)?;
            Ok(())
        }
        None => Err(CommandError::Failed(format!("no key {id}"))),
    }
}

pub fn orgs(args: OrgsArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        OrgsCommand::List(a) => {
            let store = open_read_only(&a.data, env)?;
            let rows = store.read(|txn| {
                let mut rows = Vec::new();
                for org in list_orgs(txn)? {
                    let balance = balance_of(txn, org.id)?;
                    rows.push((org, balance));
                }
                Ok::<_, StoreError>(rows)
            })?;
            writeln!(out, "id\tslug\tplan\tactive\tbalance\tname")?;
            for (org, balance) in rows {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    org.id,
                    org.slug,
                    org.plan.as_str(),
                    org.is_active,
                    format_dollars(balance),
                    org.name
                )?;
            }
            Ok(())
        }
        OrgsCommand::Show(a) => orgs_show(a, env, out),
        OrgsCommand::SetPlan(a) => orgs_set_plan(a, env, out),
        OrgsCommand::GrantCredits(a) => orgs_grant(a, env, out),
    }
}

fn orgs_show(args: OrgsShowArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let store = open_read_only(&args.data, env)?;
    let (org, balance, users, keys, (entries, total)) = store.read(|txn| {
        let org = org_or_fail(txn, &args.org)?;
        Ok::<_, CommandError>((
            org.clone(),
            balance_of(txn, org.id)?,
            list_users_of_org(txn, org.id)?,
            list_keys_of_org(txn, org.id)?,
            list_entries(txn, org.id, 1, 10)?,
        ))
    })?;
    writeln!(out, "id: {}", org.id)?;
    writeln!(out, "name: {}", org.name)?;
    writeln!(out, "slug: {}", org.slug)?;
    let limit = match (org.plan, org.custom_rate_limit) {
        (Plan::Enterprise, Some(limit)) => format!(" ({limit} requests/minute)"),
        _ => String::new(),
    };
    writeln!(out, "plan: {}{limit}", org.plan.as_str())?;
    writeln!(out, "active: {}", org.is_active)?;
    writeln!(out, "balance: {}", format_dollars(balance))?;
    writeln!(out, "created_at: {}", time(org.created_at))?;
    writeln!(out, "users: {}", users.len())?;
    for u in &users {
        let wallet = u
            .wallet_address
            .as_deref()
            .or(u.solana_address.as_deref())
            .unwrap_or("-");
        writeln!(out, "  {}\t{}\t{}", u.id, u.role.as_str(), wallet)?;
    }
    writeln!(out, "api keys: {}", keys.len())?;
    for k in &keys {
        writeln!(
            out,
            "  {}\t{}\t{}\tactive={}",
            k.id, k.key_prefix, k.name, k.is_active
        )?;
    }
    writeln!(out, "ledger rows: {total} (latest {})", entries.len())?;
    for e in &entries {
        writeln!(
            out,
            "  {}\t{}\t{}\t{}",
            time(e.created_at),
            e.kind.as_str(),
            format_dollars(e.amount_micros),
            e.description
        )?;
    }
    Ok(())
}

fn orgs_set_plan(args: OrgsSetPlanArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let plan = Plan::parse(&args.plan).ok_or_else(|| {
        CommandError::Failed(format!("{:?}: use free, pro or enterprise", args.plan))
    })?;
    if let Some(limit) = args.rate_limit {
        if plan != Plan::Enterprise {
            return Err(CommandError::Failed(
                "--rate-limit applies to the enterprise plan only".into(),
            ));
        }
        if !(1..=crate::api::input::MAX_RATE_LIMIT).contains(&limit) {
            return Err(CommandError::Failed(format!(
                "--rate-limit must be 1..={}",
                crate::api::input::MAX_RATE_LIMIT
            )));
        }
    }
    let store = open_writable(&args.data, env)?;
    let now = SystemClock.now().millis();
    let org = store.write(|txn| {
        let mut org = org_or_fail(txn, &args.org)?;
        org.plan = plan;
        org.custom_rate_limit = if plan == Plan::Enterprise {
            args.rate_limit.or(org.custom_rate_limit)
        } else {
            None
        };
        org.updated_at = now;
        update_org(txn, &org)?;
        Ok::<_, CommandError>(org)
    })?;
    writeln!(out, "{} is now on the {} plan", org.slug, org.plan.as_str())?;
    Ok(())
}

fn orgs_grant(args: OrgsGrantArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let micros = parse_dollars(&args.dollars)
        .filter(|m| *m > 0)
        .ok_or_else(|| {
            CommandError::Failed(format!(
                "{:?} is not a positive dollar amount with at most 6 decimals",
                args.dollars
            ))
        })?;
    let store = open_writable(&args.data, env)?;
    let now = SystemClock.now().millis();
    let key = args
        .idempotency_key
        .unwrap_or_else(|| format!("cli-grant:{}", Uuid::new_v4()));
    let description = args.description.unwrap_or_else(|| "Operator grant".into());
    let posted = store.write(|txn| {
        let org = org_or_fail(txn, &args.org)?;
        post_entry(
            txn,
            NewEntry {
                organization_id: org.id,
                amount_micros: micros,
                kind: EntryKind::Credit,
                description,
                idempotency_key: key,
                metadata: vec![("source".into(), "cli".into())],
            },
            now,
        )
        .map_err(|e| match e {
            LedgerError::Store(s) => CommandError::from(s),
            other => CommandError::Failed(other.to_string()),
        })
    })?;
    let verb = match posted {
        crate::store::ledger::Posted::New { .. } => "granted",
        crate::store::ledger::Posted::Replayed { .. } => "already granted (same idempotency key)",
    };
    writeln!(
        out,
        "{verb} {}; balance {}",
        format_dollars(posted.entry().amount_micros),
        format_dollars(posted.balance_micros())
    )?;
    Ok(())
}

/// `eliza-cloud ca export`: the local CA's certificate, read-only.
pub fn ca(args: crate::cli::CaArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        crate::cli::CaCommand::Export(a) => {
            let store = open_read_only(&a.data, env)?;
            let pem = store.read(crate::domains::certs::ca_pem)?.ok_or_else(|| {
                CommandError::Failed(
                    "no local CA yet: it is made by the first `eliza-cloud serve`".into(),
                )
            })?;
            write!(out, "{pem}")?;
            Ok(())
        }
    }
}

pub fn payments(args: PaymentsArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        PaymentsCommand::Pending(a) => {
            // Writable (never migrating): run after a crash, it must repair the file to read it.
            let store = open_writable(&a.data, env)?;
            let records = store.read(crate::store::settlements::list_settlements)?;
            writeln!(
                out,
                "key\tstate\tnetwork\tpayer\tamount\tcredit_to\ttransaction\tcreated_at\treason"
            )?;
            for r in &records {
                // With no server running (this command holds the database), a settlement still
                // marked `settling` was interrupted: its outcome is unknown.
                writeln!(
                    out,
                    "{}\tunknown\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.key,
                    r.network,
                    r.payer,
                    format_dollars(r.amount_micros),
                    r.credit_to.describe(),
                    r.transaction.as_deref().unwrap_or("-"),
                    time(r.created_at),
                    r.reason
                        .as_deref()
                        .unwrap_or("interrupted between /settle and the credit"),
                )?;
            }
            eprintln!("{} unresolved settlement(s)", records.len());
            Ok(())
        }
        PaymentsCommand::Resolve(a) => payments_resolve(a, env, out),
    }
}

fn payments_resolve(
    args: PaymentsResolveArgs,
    env: Env,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    use crate::store::settlements::{credit_settlement, drop_settlement, find_settlement};
    let credit = match args.decision.as_str() {
        "credit" => true,
        "refuse" => false,
        other => {
            return Err(CommandError::Failed(format!(
                "{other:?}: the decision is credit or refuse"
            )));
        }
    };
    let store = open_writable(&args.data, env)?;
    let now = SystemClock.now().millis();
    let key = args.key;
    let transaction = args
        .transaction
        .unwrap_or_else(|| "resolved-by-operator".into());
    let line = store.write(|txn| {
        let record = find_settlement(txn, &key)?.ok_or_else(|| {
            CommandError::Failed(format!(
                "no unresolved settlement {key:?} (see `payments pending`)"
            ))
        })?;
        if !credit {
            drop_settlement(txn, &key)?;
            return Ok::<_, CommandError>(format!("refused {key}: nothing credited"));
        }
        let (recorded, _) = credit_settlement(txn, &record, &transaction, now)?;
        Ok(match recorded {
            crate::store::payments::Recorded::Credited {
                record: paid,
                posted,
            } => format!(
                "credited {} to organization {}; balance {}",
                format_dollars(paid.amount_micros),
                paid.organization_id,
                format_dollars(posted.balance_micros())
            ),
            crate::store::payments::Recorded::AlreadyUsed => {
                format!("{key} had credited already: nothing credited again")
            }
        })
    })?;
    writeln!(out, "{line}")?;
    Ok(())
}

pub fn check(args: CheckArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    // Read-only: the file is checked as it is (a file that needs repair is refused by the open),
    // never migrated, repaired or written.
    let store = open_read_only(&args.data, env)?;
    let report = store.read(check::check_store)?;
    writeln!(
        out,
        "organizations {}, users {}, api keys {}, sessions {}, ledger rows {}",
        report.organizations, report.users, report.api_keys, report.sessions, report.ledger_rows
    )?;
    let mut problems = report.problems;
    problems.extend(report.unresolved_settlements);
    if problems.is_empty() {
        writeln!(out, "ok")?;
        return Ok(());
    }
    for p in &problems {
        writeln!(out, "violation: {p}")?;
    }
    Err(CommandError::Failed(format!(
        "{} violation(s)",
        problems.len()
    )))
}

/// Copies the database while holding it open read-only (so no server can start and write
/// meanwhile), as it is: an older schema is copied unmigrated. Then the copy is opened read-only
/// and, when it has this binary's schema, checked, before the copy takes its final name.
pub fn backup(args: BackupArgs, env: Env, out: &mut dyn Write) -> Result<(), CommandError> {
    let dest = PathBuf::from(&args.out);
    if dest.exists() {
        return Err(CommandError::Failed(format!(
            "{} already exists",
            dest.display()
        )));
    }
    let dir = offline_data_dir(&args.data, env);
    let store = ReadOnlyStore::open_any_version(&dir)?;
    let version = store.schema_version()?;
    let tmp = dest.with_extension("partial");
    std::fs::copy(store.database_path(), &tmp)
        .map_err(|e| CommandError::Failed(format!("cannot write {}: {e}", tmp.display())))?;
    drop(store);
    verify_copy(&tmp, &dir).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, &dest)
        .map_err(|e| CommandError::Failed(format!("cannot write {}: {e}", dest.display())))?;
    writeln!(
        out,
        "backup written to {} (database schema {version})",
        dest.display()
    )?;
    Ok(())
}

fn verify_copy(path: &Path, marker_dir: &Path) -> Result<(), CommandError> {
    let copy = ReadOnlyStore::open_file(path, marker_dir)?;
    if copy.schema_version()? != migrations::SCHEMA_VERSION {
        // An older schema's tables are not this binary's to check; the copy opened cleanly.
        return Ok(());
    }
    let report = copy.read(check::check_store)?;
    if !report.problems.is_empty() {
        return Err(CommandError::Failed(format!(
            "the copy fails its check: {}",
            report.problems.join("; ")
        )));
    }
    Ok(())
}

pub fn version(out: &mut dyn Write) -> Result<(), CommandError> {
    writeln!(
        out,
        "eliza-cloud {} (database schema {})",
        env!("CARGO_PKG_VERSION"),
        migrations::SCHEMA_VERSION
    )?;
    Ok(())
}
