//! `meridian migrate up|down|status`: versioned schema migrations from a directory of SQL
//! files, run on the primary.
//!
//! The decisions (file names, pairing, what runs, what is refused) are
//! `meridian_core::migrations`; this module reads the files, finds the primary, and carries
//! the plan out:
//!
//! - **One run at a time.** A run holds the session advisory lock [`LOCK_KEY`] in the target
//!   database from before it creates or reads the versions table until it ends, and reads the
//!   applied set only once it holds the lock, so two runs started together (two deploys, two
//!   instances) apply each migration once: the second waits, then finds nothing pending.
//! - **All or nothing per file.** An ordinary file runs in one transaction with the insert
//!   (up) or delete (down) of its version row: a failure leaves neither the change nor the
//!   row. A file marked `-- meridian:no-transaction` runs statement by statement, each
//!   committing on its own, and its row is written after the last one.
//! - **Nothing runs while anything is wrong.** Every file is read and checked, and the plan
//!   made against the versions table, before the first statement is sent; `--dry-run` stops
//!   there, taking no lock and creating nothing.
//!
//! Exit codes: 0 done (or nothing to do), 1 refused or failed, 2 unusable configuration or
//! arguments.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use meridian_config::{Config, Environment};
use meridian_control::locate::{self, LocateError, Want};
use meridian_core::migrations::{
    self, Applied, DownTarget, FoundFile, LayoutError, Migration, Rollback, Script, State, Version,
};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::{ErrorPosition, SqlState};

/// The advisory lock every run holds: the ASCII bytes of `meridian` read as a big-endian
/// 64-bit integer (0x6D65_7269_6469_616E = 7882832519763681646). Session-level, in the
/// migrated database; visible in `pg_locks` as `locktype = 'advisory'`, `classid =
/// 1835364969`, `objid = 1684627822`, `objsubid = 1`.
pub const LOCK_KEY: i64 = i64::from_be_bytes(*b"meridian");

/// The versions table, created in the session's current schema (the first existing one of
/// its `search_path`).
const TABLE: &str = "meridian_schema_migrations";

/// Schema migrations: apply, roll back, show.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Apply every pending migration, in version order.
    Up {
        #[command(flatten)]
        common: Common,
        /// Print what would run, run nothing (no lock taken, no table created).
        #[arg(long)]
        dry_run: bool,
    },
    /// Roll back the newest applied migration (or --steps N of them, or down to --to VERSION).
    Down {
        #[command(flatten)]
        common: Common,
        /// How many applied migrations to roll back, newest first.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        steps: u32,
        /// Roll back every migration above this applied version, which stays applied (0: all).
        #[arg(long, value_name = "VERSION", conflicts_with = "steps", value_parser = parse_version)]
        to: Option<Version>,
        /// Print what would run, run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every migration, applied or found, with its state.
    ///
    /// States: applied, pending, changed (its up file differs from what was applied) or
    /// missing (applied, its file gone). Exit code 1 when `up` would refuse.
    Status {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// The directory of migration files (<version>_<name>.up.sql, .down.sql).
    #[arg(long, value_name = "DIR", env = "MERIDIAN_MIGRATIONS_DIR")]
    dir: PathBuf,
    /// Meridian's configuration file (TOML); without it, the environment (DATABASE_URL...)
    /// as for `meridian run`.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The database to migrate (default: the database of DATABASE_URL when configured by the
    /// environment, else monitor.database).
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
}

fn parse_version(text: &str) -> Result<Version, String> {
    migrations::parse_version(text)
        .ok_or_else(|| format!("{text:?}: a version is decimal digits (at most 2^63 - 1)"))
}

/// Why a run stopped.
#[derive(Debug)]
enum Failure {
    /// The configuration or arguments cannot be used: exit code 2.
    Usage(String),
    /// Refused or failed: exit code 1.
    Refused(String),
}

/// Runs `meridian migrate`.
pub fn main(args: MigrateArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meridian migrate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.action)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            eprintln!("meridian migrate: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("meridian migrate: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(action: Action) -> Result<(), Failure> {
    let common = match &action {
        Action::Up { common, .. } | Action::Down { common, .. } | Action::Status { common } => {
            common
        }
    };
    let config = Config::load(common.config.as_deref(), &Environment::from_process())
        .map_err(|errors| Failure::Usage(format!("the configuration is not valid:\n{errors}")))?;
    // Every file is read and checked before any server is asked anything.
    let found = read_migrations(&common.dir)?;
    let database = match &common.database {
        Some(name) => Some(name.clone()),
        None if common.config.is_none() => database_from_environment(),
        None => None,
    };
    let mut session = Session::open(&config, database.as_deref()).await?;
    match action {
        Action::Status { .. } => session.status(&found).await,
        Action::Up { dry_run: true, .. } => session.dry_run_up(&found).await,
        Action::Up { .. } => session.up(&found).await,
        Action::Down {
            steps, to, dry_run, ..
        } => {
            let target = to.map_or(DownTarget::Steps(steps), DownTarget::To);
            if dry_run {
                session.dry_run_down(&found, target).await
            } else {
                session.down(&found, target).await
            }
        }
    }
}

/// Reads and checks every migration file of `dir`, reporting all problems at once.
fn read_migrations(dir: &Path) -> Result<Vec<Migration>, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the migrations directory {} (--dir or MERIDIAN_MIGRATIONS_DIR): {e}",
            dir.display()
        ))
    })?;
    let mut problems: Vec<String> = Vec::new();
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            Failure::Usage(format!(
                "cannot read the migrations directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = entry.path();
        let file = match entry.file_name().into_string() {
            Ok(file) => file,
            Err(raw) => {
                let lossy = raw.to_string_lossy().into_owned();
                if lossy.ends_with(".sql") {
                    problems.push(format!("{lossy}: the file name is not UTF-8: rename it"));
                }
                continue;
            }
        };
        let name = match migrations::parse_file_name(&file) {
            Ok(Some(name)) => name,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        // Follows symbolic links; a directory named like a migration is a mistake.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            problems.push(format!("{file}: not a regular file"));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(format!("{file}: cannot read it: {e}"));
                continue;
            }
        };
        let checksum = hex(&Sha256::digest(&bytes));
        let sql = match String::from_utf8(bytes) {
            Ok(sql) => sql,
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                problems.push(LayoutError::NotUtf8 { file, offset }.to_string());
                continue;
            }
        };
        match Script::inspect(&file, sql) {
            Ok(script) => files.push(FoundFile {
                name,
                script,
                checksum,
            }),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let migrations = match migrations::assemble(files) {
        Ok(migrations) => migrations,
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            Vec::new()
        }
    };
    if problems.is_empty() {
        Ok(migrations)
    } else {
        problems.sort();
        Err(Failure::Refused(format!(
            "the migrations in {} are not valid; nothing was run:\n{}",
            dir.display(),
            bulleted(&problems)
        )))
    }
}

fn bulleted(lines: &[String]) -> String {
    lines
        .iter()
        .map(|line| format!("  - {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// With no configuration file, the database the environment's URL names (`DATABASE_URL`, or
/// a `DB_<REGION>_URL`: the configuration refuses URLs that disagree), since that is the
/// database the application uses; the configuration itself keeps no database from the URL.
fn database_from_environment() -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok().or_else(|| {
        let mut regional: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("DB_") && name.ends_with("_URL"))
            .collect();
        regional.sort();
        regional.into_iter().next().map(|(_, url)| url)
    })?;
    url_database(&url)
}

/// The database of a `postgres://user:password@host:port/database?options` URL, decoded;
/// `None` when it names none.
fn url_database(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (_, path) = rest.split_once('/')?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_decode(path)?;
    (!decoded.is_empty()).then_some(decoded)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digits = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `"name"` with embedded quotes doubled, for an identifier in SQL text.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A row of the versions table, with its time for `status`.
struct Record {
    applied: Applied,
    applied_at: String,
}

/// A connection to the migrated database on the primary.
struct Session {
    client: Client,
    /// `"schema".meridian_schema_migrations`.
    table: String,
    /// `database on node (host:port)`, for messages.
    target: String,
}

impl Session {
    /// Finds the primary and connects to `database` on it (the configuration's monitor
    /// database when `None`).
    async fn open(config: &Config, database: Option<&str>) -> Result<Session, Failure> {
        let located = locate::locate(config, Want::Primary)
            .await
            .map_err(|e| match e {
                LocateError::NoCredentials | LocateError::Tls(_) => Failure::Usage(e.to_string()),
                _ => Failure::Refused(format!("cannot find the primary: {e}")),
            })?;
        let database = database.unwrap_or(&located.credentials.database).to_owned();
        let node = &located.node;
        let target = format!(
            "database {database} on {} ({}:{})",
            node.name, node.host, node.port
        );
        let client = node
            .connect(&located.credentials, Some(&database), "meridian-migrate")
            .await
            .map_err(|e| {
                Failure::Refused(format!("cannot connect to {target}: {}", server_error(&e)))
            })?;
        drop(located.client);
        let schema: Option<String> = client
            .query_one("SELECT current_schema()", &[])
            .await
            .map_err(|e| Failure::Refused(format!("on {target}: {}", server_error(&e))))?
            .get(0);
        let Some(schema) = schema else {
            return Err(Failure::Refused(format!(
                "on {target}: no schema of the search_path exists to keep {TABLE} in: create \
                 one, or set the role's search_path"
            )));
        };
        Ok(Session {
            client,
            table: format!("{}.{TABLE}", quote_identifier(&schema)),
            target,
        })
    }

    fn failed(&self, what: &str, e: &tokio_postgres::Error) -> Failure {
        Failure::Refused(format!("{what} on {}: {}", self.target, server_error(e)))
    }

    /// Takes the migration lock for the session, saying whom it waits for if it must wait,
    /// then makes sure the versions table exists.
    async fn lock(&self) -> Result<(), Failure> {
        let taken: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(|e| self.failed("taking the migration lock", &e))?
            .get(0);
        if !taken {
            eprintln!(
                "meridian migrate: waiting for the migration lock on {}, held by {}",
                self.target,
                self.lock_holder().await
            );
            self.client
                .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
                .await
                .map_err(|e| self.failed("waiting for the migration lock", &e))?;
        }
        // Created only when missing: even `IF NOT EXISTS` asks for CREATE on the schema,
        // which a role that only migrates an existing schema may lack (PostgreSQL 15 no
        // longer grants it on `public` to everyone). Under the lock no other run creates it.
        if self.table_exists().await? {
            return Ok(());
        }
        let create = format!(
            "CREATE TABLE {} (\
               version bigint PRIMARY KEY, \
               name text NOT NULL, \
               checksum text NOT NULL, \
               applied_at timestamptz NOT NULL DEFAULT now(), \
               duration_ms bigint NOT NULL)",
            self.table
        );
        self.client
            .batch_execute(&create)
            .await
            .map_err(|e| self.failed(&format!("creating {}", self.table), &e))
    }

    /// Who holds the migration lock, as far as `pg_stat_activity` tells.
    async fn lock_holder(&self) -> String {
        // A bigint key shows as its high half in classid and its low half in objid.
        let (high, low) = ((LOCK_KEY >> 32) as u32, LOCK_KEY as u32);
        let row = self
            .client
            .query_opt(
                "SELECT l.pid, coalesce(a.application_name, ''), \
                        coalesce(host(a.client_addr), 'local'), \
                        coalesce(to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'), '') \
                   FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
                  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                    AND l.classid = $1 AND l.objid = $2 \
                    AND l.database = (SELECT oid FROM pg_database \
                                       WHERE datname = current_database()) \
                  LIMIT 1",
                &[&high, &low],
            )
            .await;
        match row {
            Ok(Some(row)) => format!(
                "another run (server pid {}, application {:?}, from {}, connected {})",
                row.get::<_, i32>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3)
            ),
            _ => "another run".to_owned(),
        }
    }

    async fn table_exists(&self) -> Result<bool, Failure> {
        Ok(self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table])
            .await
            .map_err(|e| self.failed("looking for the versions table", &e))?
            .get(0))
    }

    /// The versions table's rows, in version order; none when it does not exist yet.
    async fn applied(&self) -> Result<Vec<Record>, Failure> {
        if !self.table_exists().await? {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT version, name, checksum, \
                            to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
                       FROM {} ORDER BY version",
                    self.table
                ),
                &[],
            )
            .await
            .map_err(|e| self.failed(&format!("reading {}", self.table), &e))?;
        Ok(rows
            .iter()
            .map(|row| Record {
                applied: Applied {
                    version: row.get(0),
                    name: row.get(1),
                    checksum: row.get(2),
                },
                applied_at: format!("{} UTC", row.get::<_, String>(3)),
            })
            .collect())
    }

    async fn applied_set(&self) -> Result<Vec<Applied>, Failure> {
        Ok(self
            .applied()
            .await?
            .into_iter()
            .map(|r| r.applied)
            .collect())
    }

    async fn up(&mut self, found: &[Migration]) -> Result<(), Failure> {
        self.lock().await?;
        // Read under the lock: a run that held it before has finished, and what it applied
        // is not pending any more.
        let applied = self.applied_set().await?;
        let plan = migrations::plan_up(found, &applied).map_err(|refusal| {
            Failure::Refused(format!(
                "refusing to migrate {} up; nothing was run:\n{}",
                self.target,
                bulleted(&lines(&refusal.to_string()))
            ))
        })?;
        println!("migrating {} up", self.target);
        if plan.is_empty() {
            println!(
                "nothing to apply: all {} migrations are applied",
                found.len()
            );
            return Ok(());
        }
        for (done, migration) in plan.iter().enumerate() {
            let started = Instant::now();
            let outcome = self.apply(migration, started).await;
            if let Err(failure) = outcome {
                return Err(Failure::Refused(format!(
                    "{failure}{}",
                    earlier(done, "applied")
                )));
            }
            println!(
                "applied {} (version {}) in {} ms",
                migration.up.file,
                migration.version,
                started.elapsed().as_millis()
            );
        }
        println!("{} migration(s) applied", plan.len());
        Ok(())
    }

    /// Runs one up file and records its version, as one transaction unless it is marked.
    async fn apply(&mut self, migration: &Migration, started: Instant) -> Result<(), String> {
        let insert = format!(
            "INSERT INTO {} (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            self.table
        );
        let script = &migration.up;
        if script.no_transaction {
            run_statements(&self.client, script).await?;
            let duration = millis(started);
            self.client
                .execute(
                    &insert,
                    &[
                        &migration.version,
                        &migration.name,
                        &migration.checksum,
                        &duration,
                    ],
                )
                .await
                .map_err(|e| {
                    format!(
                        "{} ran, but recording version {} failed: {}; run `migrate up` again \
                         once the cause is fixed (the file runs again)",
                        script.file,
                        migration.version,
                        server_error(&e)
                    )
                })?;
            return Ok(());
        }
        let transaction = self.client.transaction().await.map_err(|e| {
            format!(
                "{}: cannot begin a transaction: {}",
                script.file,
                server_error(&e)
            )
        })?;
        let rolled_back = |what: String| {
            format!(
                "{what}\n  rolled back: nothing of {} remains and version {} is not recorded",
                script.file, migration.version
            )
        };
        if let Err(e) = transaction.batch_execute(&script.sql).await {
            return Err(rolled_back(script_error(script, 0, None, &e)));
        }
        let duration = millis(started);
        if let Err(e) = transaction
            .execute(
                &insert,
                &[
                    &migration.version,
                    &migration.name,
                    &migration.checksum,
                    &duration,
                ],
            )
            .await
        {
            return Err(rolled_back(format!(
                "{}: recording version {} failed: {}",
                script.file,
                migration.version,
                server_error(&e)
            )));
        }
        transaction.commit().await.map_err(|e| {
            rolled_back(format!(
                "{}: the commit failed: {}",
                script.file,
                server_error(&e)
            ))
        })
    }

    async fn down(&mut self, found: &[Migration], target: DownTarget) -> Result<(), Failure> {
        self.lock().await?;
        let applied = self.applied_set().await?;
        let plan = migrations::plan_down(found, &applied, target).map_err(|refusal| {
            Failure::Refused(format!(
                "refusing to roll back {}; nothing was run:\n{}",
                self.target,
                bulleted(&lines(&refusal.to_string()))
            ))
        })?;
        println!("migrating {} down", self.target);
        if plan.is_empty() {
            println!("nothing to roll back");
            return Ok(());
        }
        for (done, rollback) in plan.iter().enumerate() {
            let started = Instant::now();
            if let Err(failure) = self.revert(rollback).await {
                return Err(Failure::Refused(format!(
                    "{failure}{}",
                    earlier(done, "rolled back")
                )));
            }
            println!(
                "rolled back {} (version {}) in {} ms",
                rollback.script.file,
                rollback.migration.version,
                started.elapsed().as_millis()
            );
        }
        println!("{} migration(s) rolled back", plan.len());
        Ok(())
    }

    /// Runs one down file and removes its version row, as one transaction unless marked.
    async fn revert(&mut self, rollback: &Rollback<'_>) -> Result<(), String> {
        let delete = format!("DELETE FROM {} WHERE version = $1", self.table);
        let (script, version) = (rollback.script, rollback.migration.version);
        if script.no_transaction {
            run_statements(&self.client, script).await?;
            self.client
                .execute(&delete, &[&version])
                .await
                .map_err(|e| {
                    format!(
                        "{} ran, but removing version {version} failed: {}",
                        script.file,
                        server_error(&e)
                    )
                })?;
            return Ok(());
        }
        let transaction = self.client.transaction().await.map_err(|e| {
            format!(
                "{}: cannot begin a transaction: {}",
                script.file,
                server_error(&e)
            )
        })?;
        let rolled_back = |what: String| {
            format!(
                "{what}\n  rolled back: nothing of {} remains and version {version} stays applied",
                script.file
            )
        };
        if let Err(e) = transaction.batch_execute(&script.sql).await {
            return Err(rolled_back(script_error(script, 0, None, &e)));
        }
        match transaction.execute(&delete, &[&version]).await {
            Ok(1) => {}
            Ok(rows) => {
                return Err(rolled_back(format!(
                    "{}: expected to remove the row of version {version}, removed {rows}",
                    script.file
                )));
            }
            Err(e) => {
                return Err(rolled_back(format!(
                    "{}: removing version {version} failed: {}",
                    script.file,
                    server_error(&e)
                )));
            }
        }
        transaction.commit().await.map_err(|e| {
            rolled_back(format!(
                "{}: the commit failed: {}",
                script.file,
                server_error(&e)
            ))
        })
    }

    async fn dry_run_up(&self, found: &[Migration]) -> Result<(), Failure> {
        let applied = self.applied_set().await?;
        self.note_running_run().await;
        let plan = migrations::plan_up(found, &applied).map_err(|refusal| {
            Failure::Refused(format!(
                "dry run: `migrate up` on {} would refuse:\n{}",
                self.target,
                bulleted(&lines(&refusal.to_string()))
            ))
        })?;
        println!("dry run: migrating {} up", self.target);
        for migration in &plan {
            println!(
                "would apply {} (version {}, {})",
                migration.up.file,
                migration.version,
                how(&migration.up)
            );
        }
        println!(
            "dry run: nothing was run ({} migration(s) would be applied)",
            plan.len()
        );
        Ok(())
    }

    async fn dry_run_down(&self, found: &[Migration], target: DownTarget) -> Result<(), Failure> {
        let applied = self.applied_set().await?;
        self.note_running_run().await;
        let plan = migrations::plan_down(found, &applied, target).map_err(|refusal| {
            Failure::Refused(format!(
                "dry run: `migrate down` on {} would refuse:\n{}",
                self.target,
                bulleted(&lines(&refusal.to_string()))
            ))
        })?;
        println!("dry run: migrating {} down", self.target);
        for rollback in &plan {
            println!(
                "would roll back {} (version {}, {})",
                rollback.script.file,
                rollback.migration.version,
                how(rollback.script)
            );
        }
        println!(
            "dry run: nothing was run ({} migration(s) would be rolled back)",
            plan.len()
        );
        Ok(())
    }

    /// A dry run takes no lock; it says so when a run is under way, since the plan may change.
    async fn note_running_run(&self) {
        let running = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                   AND objsubid = 1 AND classid = $1 AND objid = $2 AND database = \
                   (SELECT oid FROM pg_database WHERE datname = current_database()))",
                &[&((LOCK_KEY >> 32) as u32), &(LOCK_KEY as u32)],
            )
            .await
            .is_ok_and(|row| row.get::<_, bool>(0));
        if running {
            eprintln!(
                "meridian migrate: note: another run holds the migration lock on {}: this plan \
                 may change when it ends",
                self.target
            );
        }
    }

    async fn status(&self, found: &[Migration]) -> Result<(), Failure> {
        let records = self.applied().await?;
        let applied: Vec<Applied> = records.iter().map(|r| r.applied.clone()).collect();
        let rows = migrations::status(found, &applied);
        println!("{}", self.target);
        let header = ["version", "name", "state", "applied_at"];
        let table: Vec<[String; 4]> = rows
            .iter()
            .map(|row| {
                let applied_at = records
                    .iter()
                    .find(|r| r.applied.version == row.version)
                    .map(|r| r.applied_at.clone())
                    .unwrap_or_default();
                [
                    row.version.to_string(),
                    row.name.clone(),
                    row.state.to_string(),
                    applied_at,
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &table {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let print = |cells: [&str; 4]| {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            println!("{}", line.trim_end());
        };
        print(header);
        for row in &table {
            print([&row[0], &row[1], &row[2], &row[3]]);
        }
        let count = |state| rows.iter().filter(|r| r.state == state).count();
        println!(
            "{} applied, {} pending, {} changed, {} missing",
            count(State::Applied),
            count(State::Pending),
            count(State::Changed),
            count(State::Missing)
        );
        migrations::plan_up(found, &applied)
            .map(|_| ())
            .map_err(|refusal| {
                Failure::Refused(format!(
                    "`migrate up` would refuse:\n{}",
                    bulleted(&lines(&refusal.to_string()))
                ))
            })
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// What stays done after a failure part-way through a run.
fn earlier(done: usize, verb: &str) -> String {
    if done == 0 {
        String::new()
    } else {
        format!("\n  the {done} migration(s) {verb} before it in this run stay {verb}")
    }
}

fn how(script: &Script) -> String {
    if script.no_transaction {
        format!(
            "outside a transaction, {} statement(s) one by one",
            script.statements.len()
        )
    } else {
        "in a transaction".to_owned()
    }
}

fn millis(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Sends a no-transaction file's statements one at a time: PostgreSQL runs a query string of
/// several statements as one implicit transaction, in which `CREATE INDEX CONCURRENTLY` and
/// its kind are refused.
async fn run_statements(client: &Client, script: &Script) -> Result<(), String> {
    let total = script.statements.len();
    for (index, span) in script.statements.iter().enumerate() {
        let Some(statement) = script.sql.get(span.clone()) else {
            continue;
        };
        if let Err(e) = client.batch_execute(statement).await {
            let kept = if index == 0 {
                String::new()
            } else {
                format!(" the {index} statement(s) before it stay applied;")
            };
            return Err(format!(
                "{}\n  outside a transaction (statement {} of {total}):{kept} version not \
                 recorded, so `migrate up` runs the whole file again: make it safe to re-run \
                 (IF NOT EXISTS; drop an INVALID index a failed CREATE INDEX CONCURRENTLY left)",
                script_error(script, span.start, Some(index), &e),
                index + 1
            ));
        }
    }
    Ok(())
}

/// A failure of `script`'s SQL: the file, where in it, and the server's error.
fn script_error(
    script: &Script,
    sent_from: usize,
    statement: Option<usize>,
    e: &tokio_postgres::Error,
) -> String {
    let mut text = format!("{} failed", script.file);
    let position = e.as_db_error().and_then(|db| match db.position() {
        Some(ErrorPosition::Original(position)) => {
            migrations::line_and_column(&script.sql, sent_from, *position)
        }
        _ => None,
    });
    match (position, statement) {
        (Some((line, column)), _) => {
            let _ = write!(text, " at line {line}, column {column}");
        }
        (None, Some(_)) => {
            let _ = write!(
                text,
                " at line {}",
                migrations::line_of(&script.sql, sent_from)
            );
        }
        (None, None) => {}
    }
    let _ = write!(text, ": {}", server_error(e));
    if e.code() == Some(&SqlState::ACTIVE_SQL_TRANSACTION) && !script.no_transaction {
        let _ = write!(
            text,
            "\n  this statement cannot run in a transaction: make the file's first line `{}`",
            migrations::NO_TRANSACTION_MARKER
        );
    }
    text
}

/// The server's error with its SQLSTATE, detail and hint; a client-side error as it is.
fn server_error(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    if let Some(detail) = db.detail() {
        let _ = write!(text, " (detail: {detail})");
    }
    if let Some(hint) = db.hint() {
        let _ = write!(text, " (hint: {hint})");
    }
    if let Some(context) = db.where_() {
        let _ = write!(text, " (context: {})", context.replace('\n', " / "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_is_meridian_in_ascii() {
        assert_eq!(LOCK_KEY, 0x6D65_7269_6469_616E);
        assert_eq!(LOCK_KEY, 7_882_832_519_763_681_646);
        assert_eq!(
            ((LOCK_KEY >> 32) as u32, LOCK_KEY as u32),
            (1_835_364_969, 1_684_627_822)
        );
    }

    #[test]
    fn the_database_of_a_url() {
        assert_eq!(
            url_database("postgres://app:pw@db:5432/orders?sslmode=require").as_deref(),
            Some("orders")
        );
        assert_eq!(
            url_database("postgresql://app@db/my%20db").as_deref(),
            Some("my db")
        );
        assert_eq!(url_database("postgres://app@db:5432"), None);
        assert_eq!(url_database("postgres://app@db/"), None);
        assert_eq!(url_database("postgres://app@db/%zz"), None);
        assert_eq!(url_database("not a url"), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("public"), "\"public\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
