//! The command line: `tollgate serve | gateway | admin | migrate` and the management commands
//! (orgs, keys, users, tokens, members, features, limits, usage). Management commands are thin
//! callers of the admin service's operations layer (`admin::ops`), acting as a local superuser
//! named `cli`: the same rules, validation and audit rows as the API. They print a table or
//! `--json`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use admin::ops::{self, Actor, OpsError};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use store::Store;

use crate::config::{Config, ProcessEnv, Settings};
use crate::output;

/// Tollgate: a metering, limit-enforcing reverse proxy for Google's generative AI APIs.
///
/// Configuration comes from config/tollgate.toml (or --config), each key overridable by an
/// environment variable TOLLGATE_<SECTION>__<KEY>, e.g. TOLLGATE_DATABASE__URL.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about)]
pub struct Cli {
    /// Configuration file (default: config/tollgate.toml when it exists, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway, the admin service and the metrics listener in one process.
    Serve,
    /// Run only the gateway (and its metrics listener).
    Gateway,
    /// Run only the admin service.
    Admin,
    /// Apply database migrations (also done at every start); re-running is harmless.
    Migrate,
    /// The database: table sizes and what retention will delete.
    #[command(subcommand)]
    Db(DbCmd),
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCmd),
    /// Manage gateway keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manage admin users.
    #[command(subcommand)]
    User(UserCmd),
    /// Personal API tokens (tgp_…) for the admin API.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage memberships of users in organizations.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Show and switch an organization's feature flags.
    #[command(subcommand)]
    Feature(FeatureCmd),
    /// Manage an organization's usage limits.
    #[command(subcommand)]
    Limit(LimitCmd),
    /// Show an organization's usage (metered requests, tokens, cost): totals, and breakdowns by
    /// provider, model, tool and user, from the daily rollups.
    Usage {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// First day included (YYYY-MM-DD, UTC); default: the first of this month.
        #[arg(long)]
        from: Option<String>,
        /// Last day included (YYYY-MM-DD, UTC); default: today.
        #[arg(long)]
        to: Option<String>,
    },
    /// List an organization's most recent usage events.
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        /// Export instead of listing.
        #[command(subcommand)]
        export: Option<EventsCmd>,
        /// The organization (id or name).
        #[arg(long)]
        org: Option<String>,
        /// How many (newest first).
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

/// `tollgate events export …`
#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Write an organization's usage events of a range of UTC days to stdout, oldest first, a
    /// page at a time (any size, constant memory): take them out before retention deletes them.
    Export {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// First day included (YYYY-MM-DD, UTC).
        #[arg(long)]
        from: String,
        /// Last day included (YYYY-MM-DD, UTC).
        #[arg(long)]
        to: String,
        /// csv or jsonl.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

/// `tollgate org …`
#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Create an organization (all features on, except `features.default_off`).
    Create {
        /// Its unique name.
        name: String,
    },
    /// List organizations.
    List,
    /// Delete an organization with its keys, members, limits and usage.
    Delete {
        /// Id or name.
        org: String,
    },
}

/// `tollgate key …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a gateway key; the key is printed once and cannot be shown again.
    Create {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// A service key, which may name the org per request with `x-tollgate-org`.
        #[arg(long)]
        service: bool,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// Attribute the key's usage to this user (id or email).
        #[arg(long)]
        user: Option<String>,
        /// Another organization (id or name) the service key may name with x-tollgate-org
        /// (repeat for more); without it, and without --any-org, only its own.
        #[arg(long = "acts-for", requires = "service")]
        acts_for: Vec<String>,
        /// The service key may name any organization.
        #[arg(long, requires = "service", conflicts_with = "acts_for")]
        any_org: bool,
    },
    /// List an organization's keys (prefixes only).
    List {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
    },
    /// Revoke a key; running gateways refuse it within seconds.
    Revoke {
        /// The key's id (from `key list`).
        id: i64,
    },
}

/// `tollgate user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user; the password is read from stdin (or prompted for on a terminal).
    Create {
        /// Login email.
        #[arg(long)]
        email: String,
        /// Grant superuser rights (sees and manages every organization).
        #[arg(long)]
        superuser: bool,
    },
    /// List users.
    List,
    /// Reset a user's password (read from stdin, or prompted for); their sessions end.
    Password {
        /// Login email.
        #[arg(long)]
        email: String,
    },
}

/// `tollgate token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a personal API token acting as a user; it is printed once (`--json`: `token`).
    Create {
        /// The user the token acts as (email or id): it carries their rights, never more.
        #[arg(long)]
        user: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_days: Option<i64>,
    },
}

/// `tollgate member …`
#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Add a user to an organization.
    Add(MemberArgs),
    /// Change a member's role.
    Role(MemberArgs),
    /// Remove a user from an organization.
    Remove {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// The user (id or email).
        #[arg(long)]
        user: String,
    },
    /// List an organization's members.
    List {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
    },
}

/// Who gets which role where.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The organization (id or name).
    #[arg(long)]
    org: String,
    /// The user (id or email).
    #[arg(long)]
    user: String,
    /// owner, admin or member.
    #[arg(long, default_value = "member")]
    role: String,
}

/// `tollgate feature …`
#[derive(Debug, Subcommand)]
pub enum FeatureCmd {
    /// Show an organization's eleven feature flags.
    List {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
    },
    /// Switch a feature on or off.
    Set {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// The feature (e.g. video_generation).
        feature: String,
        /// on or off.
        state: String,
    },
}

/// `tollgate db …`
#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Each table's rows and size, the oldest usage event, and the retention settings.
    Stats,
    /// Delete now what is past its retention (the background pass does it hourly), as the
    /// background pass does: on a thread of the lowest priority, a batch, then 3 (SQLite) or 39
    /// (PostgreSQL) times its duration of rest.
    Prune {
        /// Rest only 20 ms between batches (a maintenance window: several times faster, and
        /// felt by the traffic).
        #[arg(long)]
        fast: bool,
    },
}

/// `tollgate limit …`
#[derive(Debug, Subcommand)]
pub enum LimitCmd {
    /// Create or replace a limit.
    Set {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// monthly_tokens, monthly_cost, daily_ads or daily_requests.
        #[arg(long = "type")]
        limit_type: String,
        /// Tokens, requests or images+videos per period; for monthly_cost, US dollars (e.g. 25 or 12.50).
        #[arg(long, allow_hyphen_values = true)]
        value: String,
        /// Alert when usage crosses this percent of the value (1–100).
        #[arg(long, default_value_t = 80, allow_hyphen_values = true)]
        alert: i64,
        /// Store the limit switched off (it refuses nothing until enabled).
        #[arg(long)]
        disabled: bool,
    },
    /// List an organization's limits.
    List {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
    },
    /// Remove a limit.
    Remove {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// The limit type.
        #[arg(long = "type")]
        limit_type: String,
    },
}

/// Parses the arguments and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &ProcessEnv)?;
    let settings = config.validate(&ProcessEnv)?;
    match cli.command {
        Command::Serve => crate::serve::run(settings, crate::serve::Services::ALL),
        Command::Gateway => crate::serve::run(settings, crate::serve::Services::GATEWAY),
        Command::Admin => crate::serve::run(settings, crate::serve::Services::ADMIN),
        command => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(manage(&settings, command, cli.json))
        }
    }
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database_url, &settings.connect)
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                crate::config::redact_url(&settings.database_url)
            )
        })?;
    store.migrate().await?;
    Ok(store)
}

/// `tollgate db stats`.
async fn db_stats(cx: &Cx<'_>, settings: &Settings) -> anyhow::Result<()> {
    let tables = cx.store.table_stats().await?;
    let oldest = cx.store.oldest_event().await?;
    let raw = &settings.raw;
    let keep = |d: u64| {
        if d == 0 {
            "for ever".to_owned()
        } else {
            format!("{d} days")
        }
    };
    if cx.json {
        return output::json(&serde_json::json!({
            "tables": tables,
            "oldest_event": oldest,
            "retention_days": {
                "events": raw.ledger.retention_days,
                "alerts": raw.limits.alert_retention_days,
                "audit": raw.admin.audit_retention_days,
            },
        }));
    }
    let size = |b: Option<i64>| match b {
        None => "?".to_owned(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        Some(b) => format!("{:.0} KiB", b as f64 / 1024.0),
    };
    output::table(
        &["TABLE", "ROWS", "SIZE"],
        &tables
            .iter()
            .map(|t| vec![t.table.clone(), t.rows.to_string(), size(t.bytes)])
            .collect::<Vec<_>>(),
    );
    match oldest {
        Some(at) => output::line(&format!(
            "oldest usage event: {} ({} days ago)",
            at.format("%Y-%m-%d %H:%M UTC"),
            (chrono::Utc::now() - at).num_days()
        )),
        None => output::line("no usage events"),
    }
    output::line(&format!(
        "kept: usage events {}, limit alerts {}, audit rows {} (daily rollups: for ever)",
        keep(raw.ledger.retention_days),
        keep(raw.limits.alert_retention_days),
        keep(raw.admin.audit_retention_days),
    ));
    Ok(())
}

/// An operation's error as one line: the option at fault first.
fn cli_error(e: OpsError) -> anyhow::Error {
    match e {
        OpsError::Invalid { field, message } if !field.is_empty() => {
            anyhow::anyhow!("--{}: {message}", field.replace('_', "-"))
        }
        e => anyhow::anyhow!("{e}"),
    }
}

async fn manage(settings: &Settings, command: Command, json: bool) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let cx = Cx {
        store: &store,
        actor: Actor::cli(),
        json,
    };
    let result = match command {
        Command::Migrate => {
            output::line("migrations applied");
            Ok(())
        }
        Command::Org(c) => org(&cx, settings, c).await,
        Command::Key(c) => key(&cx, c).await,
        Command::User(c) => user(&cx, c).await,
        Command::Token(c) => token(&cx, c).await,
        Command::Member(c) => member(&cx, c).await,
        Command::Feature(c) => feature(&cx, c).await,
        Command::Limit(c) => limit(&cx, c).await,
        Command::Db(DbCmd::Stats) => db_stats(&cx, settings).await,
        Command::Db(DbCmd::Prune { fast }) => {
            let raw = &settings.raw;
            let retention = crate::retention::Retention::from_days(
                raw.ledger.retention_days,
                raw.limits.alert_retention_days,
                raw.admin.audit_retention_days,
            );
            let started = std::time::Instant::now();
            let now = chrono::Utc::now();
            // Gentle: as the serving process's pass does it, on a thread of the lowest priority.
            let p = match fast {
                true => {
                    let fast = crate::retention::Pace::Fast;
                    crate::retention::prune_once(cx.store, retention, now, fast).await?
                }
                false => {
                    let db = crate::retention::Db::new(settings, cx.store.clone());
                    crate::retention::prune_low(db, retention, now).await?
                }
            };
            if cx.json {
                output::json(&serde_json::json!({
                    "events": p.events, "alerts": p.alerts, "audit": p.audit,
                    "sessions": p.sessions, "seconds": started.elapsed().as_secs_f64(),
                }))
            } else {
                output::line(&format!(
                    "pruned {} events, {} alerts, {} audit rows, {} sessions in {:.1} s",
                    p.events,
                    p.alerts,
                    p.audit,
                    p.sessions,
                    started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
        }
        Command::Usage { org, from, to } => usage(&cx, &org, from.as_deref(), to.as_deref()).await,
        Command::Events {
            export:
                Some(EventsCmd::Export {
                    org,
                    from,
                    to,
                    format,
                }),
            ..
        } => {
            let format: ops::export::Format = format.parse().map_err(cli_error)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = ops::export::export(cx.store, &cx.actor, &org, (&from, &to), format, &mut out)
                .await
                .map_err(cli_error)?;
            std::io::Write::flush(&mut out)?;
            tracing::debug!(events = n, "exported");
            Ok(())
        }
        Command::Events {
            org: Some(org),
            limit,
            ..
        } => events(&cx, &org, limit, settings.raw.ledger.retention_days).await,
        Command::Events { .. } => bail!("--org is required (or: events export --org ...)"),
        Command::Serve | Command::Gateway | Command::Admin => Ok(()),
    };
    store.close().await;
    result
}

/// What every management command needs.
struct Cx<'a> {
    store: &'a Store,
    actor: Actor,
    json: bool,
}

impl Cx<'_> {
    /// Prints `value` as JSON, or the table `rows` makes of it.
    fn print<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        headers: &[&str],
        rows: impl FnOnce() -> Vec<Vec<String>>,
    ) -> anyhow::Result<()> {
        if self.json {
            return output::json(value);
        }
        output::table(headers, &rows());
        Ok(())
    }

    fn done(&self, message: &str) -> anyhow::Result<()> {
        if self.json {
            return output::json(&serde_json::json!({ "ok": true, "message": message }));
        }
        output::line(message);
        Ok(())
    }
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339()
}

async fn org(cx: &Cx<'_>, settings: &Settings, c: OrgCmd) -> anyhow::Result<()> {
    let (s, a) = (cx.store, &cx.actor);
    let orgs = match c {
        OrgCmd::Create { name } => vec![ops::orgs::create(s, a, &name, &settings.features_on)
            .await
            .map_err(cli_error)?],
        OrgCmd::List => ops::orgs::list(s, a).await.map_err(cli_error)?,
        OrgCmd::Delete { org } => {
            let o = ops::orgs::delete(s, a, &org).await.map_err(cli_error)?;
            return cx.done(&format!("deleted organization {} ({})", o.name, o.id));
        }
    };
    cx.print(
        &orgs,
        &["ID", "NAME", "MEMBERS", "MONTH_COST", "CREATED"],
        || {
            orgs.iter()
                .map(|o| {
                    vec![
                        o.id.to_string(),
                        o.name.clone(),
                        o.members.to_string(),
                        ops::parse::micros_to_dollars(o.month_cost_micros),
                        time(o.created_at),
                    ]
                })
                .collect()
        },
    )
}

async fn key(cx: &Cx<'_>, c: KeyCmd) -> anyhow::Result<()> {
    let (s, a) = (cx.store, &cx.actor);
    match c {
        KeyCmd::Create {
            org,
            service,
            name,
            user,
            acts_for,
            any_org,
        } => {
            let new = ops::keys::NewKey {
                service,
                name,
                user,
                acts_for,
                any_org,
            };
            let k = ops::keys::create(s, a, &org, &new)
                .await
                .map_err(cli_error)?;
            if cx.json {
                return output::json(&k);
            }
            output::line(&format!(
                "created {} key {} for organization {org}",
                k.key.kind, k.key.id
            ));
            output::line(&format!("key: {}", k.secret));
            output::line("store it now: it cannot be shown again");
            Ok(())
        }
        KeyCmd::List { org } => {
            let keys = ops::keys::list(s, a, &org).await.map_err(cli_error)?;
            cx.print(
                &keys,
                &[
                    "ID",
                    "KIND",
                    "PREFIX",
                    "NAME",
                    "CREATED",
                    "LAST_USED",
                    "STATUS",
                ],
                || {
                    keys.iter()
                        .map(|k| {
                            vec![
                                k.id.to_string(),
                                k.kind.to_string(),
                                format!("{}…", k.prefix),
                                k.name.clone(),
                                time(k.created_at),
                                k.last_used_at.map_or_else(|| "never".into(), time),
                                k.revoked_at.map_or_else(
                                    || "active".into(),
                                    |t| format!("revoked {}", time(t)),
                                ),
                            ]
                        })
                        .collect()
                },
            )
        }
        KeyCmd::Revoke { id } => {
            let k = ops::keys::revoke_by_id(s, a, id).await.map_err(cli_error)?;
            if cx.json {
                return output::json(&k);
            }
            output::line(&format!("revoked key {id} ({}…)", k.prefix));
            Ok(())
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let second = rpassword::prompt_password("again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(password)
}

async fn user(cx: &Cx<'_>, c: UserCmd) -> anyhow::Result<()> {
    let (s, a) = (cx.store, &cx.actor);
    let users = match c {
        UserCmd::Create { email, superuser } => {
            let password = read_password()?;
            vec![ops::users::create(s, a, &email, &password, superuser)
                .await
                .map_err(cli_error)?]
        }
        UserCmd::List => ops::users::list(s, a).await.map_err(cli_error)?,
        UserCmd::Password { email } => {
            let password = read_password()?;
            ops::users::set_password(s, a, &email, None, &password, None)
                .await
                .map_err(cli_error)?;
            return cx.done(&format!(
                "changed the password of {email}; their sessions ended"
            ));
        }
    };
    cx.print(&users, &["ID", "EMAIL", "SUPERUSER", "CREATED"], || {
        users
            .iter()
            .map(|u| {
                vec![
                    u.id.to_string(),
                    u.email.clone(),
                    if u.superuser { "yes" } else { "no" }.into(),
                    time(u.created_at),
                ]
            })
            .collect()
    })
}

async fn token(cx: &Cx<'_>, c: TokenCmd) -> anyhow::Result<()> {
    let TokenCmd::Create {
        user,
        name,
        expires_days,
    } = c;
    let t = ops::tokens::create(cx.store, &cx.actor, Some(&user), &name, expires_days)
        .await
        .map_err(cli_error)?;
    if cx.json {
        return output::json(&t);
    }
    output::line(&format!("created API token {} for {user}", t.info.id));
    output::line(&format!("token: {}", t.token));
    output::line("store it now: it cannot be shown again");
    Ok(())
}

async fn member(cx: &Cx<'_>, c: MemberCmd) -> anyhow::Result<()> {
    let (s, a) = (cx.store, &cx.actor);
    let members = match c {
        MemberCmd::Add(m) => {
            let role = ops::members::role(&m.role).map_err(cli_error)?;
            vec![ops::members::add(s, a, &m.org, &m.user, role)
                .await
                .map_err(cli_error)?]
        }
        MemberCmd::Role(m) => {
            let role = ops::members::role(&m.role).map_err(cli_error)?;
            vec![ops::members::set_role(s, a, &m.org, &m.user, role)
                .await
                .map_err(cli_error)?]
        }
        MemberCmd::Remove { org, user } => {
            let m = ops::members::remove(s, a, &org, &user)
                .await
                .map_err(cli_error)?;
            return cx.done(&format!("removed {} from {org}", m.email));
        }
        MemberCmd::List { org } => ops::members::list(s, a, &org).await.map_err(cli_error)?,
    };
    cx.print(&members, &["USER", "EMAIL", "ROLE", "SINCE"], || {
        members
            .iter()
            .map(|m| {
                vec![
                    m.user_id.to_string(),
                    m.email.clone(),
                    m.role.to_string(),
                    time(m.joined_at),
                ]
            })
            .collect()
    })
}

async fn feature(cx: &Cx<'_>, c: FeatureCmd) -> anyhow::Result<()> {
    let (s, a) = (cx.store, &cx.actor);
    let (org, flags) = match c {
        FeatureCmd::List { org } => {
            let flags = ops::features::list(s, a, &org).await.map_err(cli_error)?;
            (org, flags)
        }
        FeatureCmd::Set {
            org,
            feature,
            state,
        } => {
            let f = ops::features::feature(&feature).map_err(cli_error)?;
            let on = ops::parse::feature_state(&state).map_err(cli_error)?;
            let all = ops::features::set(s, a, &org, &[(f, on)])
                .await
                .map_err(cli_error)?;
            (
                org,
                all.into_iter()
                    .filter(|v| v.feature == f.as_str())
                    .collect(),
            )
        }
    };
    cx.print(&flags, &["ORG", "FEATURE", "STATE", "GATES"], || {
        flags
            .iter()
            .map(|f| {
                vec![
                    org.clone(),
                    f.feature.clone(),
                    if f.enabled { "on" } else { "off" }.into(),
                    f.gates.into(),
                ]
            })
            .collect()
    })
}

async fn limit(cx: &Cx<'_>, c: LimitCmd) -> anyhow::Result<()> {
    let (s, a) = (cx.store, &cx.actor);
    let (org, limits) = match c {
        LimitCmd::Set {
            org,
            limit_type,
            value,
            alert,
            disabled,
        } => {
            let t = ops::limits::limit_type(&limit_type).map_err(cli_error)?;
            let l = ops::limits::set(s, a, &org, t, &value, alert, !disabled)
                .await
                .map_err(cli_error)?;
            (org, vec![l])
        }
        LimitCmd::List { org } => {
            let limits = ops::limits::list(s, a, &org).await.map_err(cli_error)?;
            (org, limits)
        }
        LimitCmd::Remove { org, limit_type } => {
            let t = ops::limits::limit_type(&limit_type).map_err(cli_error)?;
            ops::limits::remove(s, a, &org, t)
                .await
                .map_err(cli_error)?;
            return cx.done(&format!("removed the {t} limit of {org}"));
        }
    };
    cx.print(
        &limits,
        &["ORG", "TYPE", "VALUE", "USED", "ALERT", "STATE", "RESETS"],
        || {
            limits
                .iter()
                .map(|l| {
                    let t: store::LimitType = l
                        .limit_type
                        .parse()
                        .unwrap_or(store::LimitType::DailyRequests);
                    vec![
                        org.clone(),
                        l.limit_type.clone(),
                        ops::parse::format_limit_value(t, l.raw_value),
                        format!(
                            "{} ({}%)",
                            ops::parse::format_limit_value(t, l.raw_usage),
                            l.percent
                        ),
                        format!("{}%", l.alert_threshold),
                        if l.enabled { "enabled" } else { "disabled" }.into(),
                        time(l.resets_at),
                    ]
                })
                .collect()
        },
    )
}

async fn usage(cx: &Cx<'_>, org: &str, from: Option<&str>, to: Option<&str>) -> anyhow::Result<()> {
    let today = chrono::Utc::now().date_naive();
    let w = ops::parse::window(today, None, from, to).map_err(cli_error)?;
    let report = ops::usage::report(cx.store, &cx.actor, org, w)
        .await
        .map_err(cli_error)?;
    if cx.json {
        return output::json(&report);
    }
    output::line(&format!(
        "usage of {} from {} to {} (UTC days; requests are metered requests)",
        report.org, w.from, w.to
    ));
    let row = |name: String, t: &ops::usage::Totals| {
        vec![
            name,
            t.requests.to_string(),
            t.input_tokens.to_string(),
            t.output_tokens.to_string(),
            t.thinking_tokens.to_string(),
            t.cached_tokens.to_string(),
            t.images.to_string(),
            t.video_seconds.to_string(),
            ops::parse::micros_to_dollars(t.cost_micros),
        ]
    };
    let headers = [
        "", "REQUESTS", "INPUT", "OUTPUT", "THINKING", "CACHED", "IMAGES", "VIDEO_S", "COST",
    ];
    let mut rows = vec![row("total".into(), &report.totals)];
    for (label, group) in [
        ("provider", &report.by_provider),
        ("model", &report.by_model),
        ("tool", &report.by_tool),
        ("user", &report.by_user),
    ] {
        rows.extend(group.iter().map(|t| {
            let key = if t.key.is_empty() { "(none)" } else { &t.key };
            row(format!("{label} {key}"), t)
        }));
    }
    output::table(&headers, &rows);
    Ok(())
}

async fn events(cx: &Cx<'_>, org: &str, limit: i64, kept_days: u64) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&limit) {
        bail!("--limit must be between 1 and 10000, got {limit}");
    }
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    while (events.len() as i64) < limit {
        let page_size = (limit - events.len() as i64).min(ops::usage::EVENTS_PAGE);
        let page = ops::usage::events(cx.store, &cx.actor, org, cursor.as_deref(), Some(page_size))
            .await
            .map_err(cli_error)?;
        events.extend(page.events);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let printed = cx.print(
        &events,
        &[
            "TIME",
            "REQUEST",
            "MODEL",
            "OPERATION",
            "STATUS",
            "IN",
            "OUT",
            "COST",
            "FLAGS",
        ],
        || {
            events
                .iter()
                .map(|e| {
                    vec![
                        e.occurred_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        e.client_request_id
                            .clone()
                            .unwrap_or_else(|| e.request_id.clone()),
                        e.model.clone(),
                        e.operation.clone(),
                        e.status.to_string(),
                        e.input_tokens.to_string(),
                        (e.output_tokens + e.thinking_tokens).to_string(),
                        ops::parse::micros_to_dollars(e.cost_micros),
                        [
                            e.estimated.then_some("estimated"),
                            (!e.priced).then_some("unpriced"),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(","),
                    ]
                })
                .collect()
        },
    );
    if !cx.json && kept_days > 0 {
        output::line(&format!(
            "events are kept {kept_days} days (ledger.retention_days); totals stay in the rollups"
        ));
    }
    printed
}
