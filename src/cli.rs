//! The command line: `tollgate serve | gateway | admin | migrate` and the management commands
//! (orgs, keys, users, members, features, limits). Management commands talk to the store
//! directly, record what they change in the audit log, and print a table or `--json`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use store::{Feature, KeyKind, LimitSpec, LimitType, Role, Store};

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
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCmd),
    /// Manage gateway keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manage admin users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage memberships of users in organizations.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Show and switch an organization's feature flags.
    #[command(subcommand)]
    Feature(FeatureCmd),
    /// Manage an organization's usage limits.
    #[command(subcommand)]
    Limit(LimitCmd),
    /// Show an organization's usage: totals, and a breakdown by model and operation.
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
    Events {
        /// The organization (id or name).
        #[arg(long)]
        org: String,
        /// How many (newest first).
        #[arg(long, default_value_t = 20)]
        limit: i64,
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

const ACTOR: &str = "cli";

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

async fn manage(settings: &Settings, command: Command, json: bool) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let result = match command {
        Command::Migrate => {
            output::line("migrations applied");
            Ok(())
        }
        Command::Org(c) => org(&store, settings, c, json).await,
        Command::Key(c) => key(&store, c, json).await,
        Command::User(c) => user(&store, c, json).await,
        Command::Member(c) => member(&store, c, json).await,
        Command::Feature(c) => feature(&store, c, json).await,
        Command::Limit(c) => limit(&store, c, json).await,
        Command::Usage { org, from, to } => {
            usage(&store, &org, from.as_deref(), to.as_deref(), json).await
        }
        Command::Events { org, limit } => events(&store, &org, limit, json).await,
        Command::Serve | Command::Gateway | Command::Admin => Ok(()),
    };
    store.close().await;
    result
}

async fn org(store: &Store, settings: &Settings, c: OrgCmd, json: bool) -> anyhow::Result<()> {
    match c {
        OrgCmd::Create { name } => {
            let org = store
                .create_org(&name, &settings.features_on)
                .await
                .map_err(|e| match e {
                    store::StoreError::Conflict { .. } => {
                        anyhow!("an organization named {:?} already exists", name.trim())
                    }
                    e => e.into(),
                })?;
            store
                .audit(ACTOR, "org.create", Some(org.id), &org.name, "")
                .await?;
            print_orgs(&[org], json)
        }
        OrgCmd::List => print_orgs(&store.list_orgs().await?, json),
        OrgCmd::Delete { org } => {
            let org = store.resolve_org(&org).await?;
            store.delete_org(org.id).await?;
            store
                .audit(ACTOR, "org.delete", None, &org.name, "")
                .await?;
            done(
                json,
                &format!("deleted organization {} ({})", org.name, org.id),
            )
        }
    }
}

fn print_orgs(orgs: &[store::Org], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(orgs);
    }
    let rows = orgs
        .iter()
        .map(|o| vec![o.id.to_string(), o.name.clone(), o.created_at.to_rfc3339()])
        .collect::<Vec<_>>();
    output::table(&["ID", "NAME", "CREATED"], &rows);
    Ok(())
}

#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    key: &'a store::ApiKey,
    /// The plaintext key, shown once.
    secret: &'a str,
}

async fn key(store: &Store, c: KeyCmd, json: bool) -> anyhow::Result<()> {
    match c {
        KeyCmd::Create {
            org,
            service,
            name,
            user,
        } => {
            let org = store.resolve_org(&org).await?;
            let user_id = match user {
                Some(u) => Some(store.resolve_user(&u).await?.id),
                None => None,
            };
            let kind = if service {
                KeyKind::Service
            } else {
                KeyKind::App
            };
            let (row, secret) = store.create_key(org.id, kind, &name, user_id).await?;
            store
                .audit(
                    ACTOR,
                    "key.create",
                    Some(org.id),
                    &row.id.to_string(),
                    &format!("{{\"prefix\":\"{}\"}}", row.prefix),
                )
                .await?;
            if json {
                return output::json(&CreatedKey {
                    key: &row,
                    secret: &secret,
                });
            }
            output::line(&format!(
                "created {kind} key {} for organization {}",
                row.id, org.name
            ));
            output::line(&format!("key: {secret}"));
            output::line("store it now: it cannot be shown again");
            Ok(())
        }
        KeyCmd::List { org } => {
            let org = store.resolve_org(&org).await?;
            let keys = store.list_keys(org.id).await?;
            if json {
                return output::json(&keys);
            }
            let rows = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.to_string(),
                        k.kind.to_string(),
                        format!("{}…", k.prefix),
                        k.name.clone(),
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map_or_else(
                            || "active".into(),
                            |t| format!("revoked {}", t.to_rfc3339()),
                        ),
                    ]
                })
                .collect::<Vec<_>>();
            output::table(
                &["ID", "KIND", "PREFIX", "NAME", "CREATED", "STATUS"],
                &rows,
            );
            Ok(())
        }
        KeyCmd::Revoke { id } => {
            let k = store.revoke_key(id).await?;
            store
                .audit(ACTOR, "key.revoke", Some(k.org_id), &id.to_string(), "")
                .await?;
            if json {
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

async fn user(store: &Store, c: UserCmd, json: bool) -> anyhow::Result<()> {
    match c {
        UserCmd::Create { email, superuser } => {
            let password = read_password()?;
            let u = store
                .create_user(&email, &password, superuser)
                .await
                .map_err(|e| match e {
                    store::StoreError::Conflict { .. } => {
                        anyhow!("a user with email {:?} already exists", email.trim())
                    }
                    e => e.into(),
                })?;
            store
                .audit(
                    ACTOR,
                    "user.create",
                    None,
                    &u.email,
                    &format!("{{\"superuser\":{superuser}}}"),
                )
                .await?;
            print_users(&[u], json)
        }
        UserCmd::List => print_users(&store.list_users().await?, json),
    }
}

fn print_users(users: &[store::User], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(users);
    }
    let rows = users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                u.email.clone(),
                if u.is_superuser { "yes" } else { "no" }.into(),
                u.created_at.to_rfc3339(),
            ]
        })
        .collect::<Vec<_>>();
    output::table(&["ID", "EMAIL", "SUPERUSER", "CREATED"], &rows);
    Ok(())
}

async fn member(store: &Store, c: MemberCmd, json: bool) -> anyhow::Result<()> {
    let m = match c {
        MemberCmd::Add(a) => {
            let (org, user, role) = member_args(store, &a).await?;
            let m = store
                .add_member(org.id, user.id, role)
                .await
                .map_err(|e| match e {
                    store::StoreError::Conflict { .. } => {
                        anyhow!("{} is already a member of {}", user.email, org.name)
                    }
                    e => e.into(),
                })?;
            store
                .audit(
                    ACTOR,
                    "member.add",
                    Some(org.id),
                    &user.email,
                    &format!("{{\"role\":\"{role}\"}}"),
                )
                .await?;
            m
        }
        MemberCmd::Role(a) => {
            let (org, user, role) = member_args(store, &a).await?;
            let m = store.set_role(org.id, user.id, role).await?;
            store
                .audit(
                    ACTOR,
                    "member.role",
                    Some(org.id),
                    &user.email,
                    &format!("{{\"role\":\"{role}\"}}"),
                )
                .await?;
            m
        }
        MemberCmd::Remove { org, user } => {
            let org = store.resolve_org(&org).await?;
            let user = store.resolve_user(&user).await?;
            store.remove_member(org.id, user.id).await?;
            store
                .audit(ACTOR, "member.remove", Some(org.id), &user.email, "")
                .await?;
            return done(json, &format!("removed {} from {}", user.email, org.name));
        }
        MemberCmd::List { org } => {
            let org = store.resolve_org(&org).await?;
            return print_members(&store.list_members(org.id).await?, json);
        }
    };
    print_members(&[m], json)
}

async fn member_args(
    store: &Store,
    a: &MemberArgs,
) -> anyhow::Result<(store::Org, store::User, Role)> {
    let role: Role = a.role.parse()?;
    let org = store.resolve_org(&a.org).await?;
    let user = store.resolve_user(&a.user).await?;
    Ok((org, user, role))
}

fn print_members(members: &[store::Membership], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(members);
    }
    let rows = members
        .iter()
        .map(|m| {
            vec![
                m.user_id.to_string(),
                m.email.clone(),
                m.role.to_string(),
                m.created_at.to_rfc3339(),
            ]
        })
        .collect::<Vec<_>>();
    output::table(&["USER", "EMAIL", "ROLE", "SINCE"], &rows);
    Ok(())
}

async fn feature(store: &Store, c: FeatureCmd, json: bool) -> anyhow::Result<()> {
    let (org, flags) = match c {
        FeatureCmd::List { org } => {
            let org = store.resolve_org(&org).await?;
            let flags = store.list_features(org.id).await?;
            (org, flags)
        }
        FeatureCmd::Set {
            org,
            feature,
            state,
        } => {
            let feature: Feature = feature.parse()?;
            let enabled = match state.to_ascii_lowercase().as_str() {
                "on" | "true" | "enable" | "enabled" => true,
                "off" | "false" | "disable" | "disabled" => false,
                other => bail!("feature state must be on or off, got {other:?}"),
            };
            let org = store.resolve_org(&org).await?;
            let flag = store.set_feature(org.id, feature, enabled).await?;
            store
                .audit(
                    ACTOR,
                    "feature.set",
                    Some(org.id),
                    feature.as_str(),
                    &format!("{{\"enabled\":{enabled}}}"),
                )
                .await?;
            (org, vec![flag])
        }
    };
    if json {
        return output::json(&flags);
    }
    let rows = flags
        .iter()
        .map(|f| {
            vec![
                org.name.clone(),
                f.feature.to_string(),
                if f.enabled { "on" } else { "off" }.into(),
            ]
        })
        .collect::<Vec<_>>();
    output::table(&["ORG", "FEATURE", "STATE"], &rows);
    Ok(())
}

/// Parses a limit value in the limit's unit: dollars (up to 6 decimals) for monthly_cost,
/// a whole number otherwise. Returns the stored integer (micro-dollars for cost).
pub fn parse_limit_value(limit_type: LimitType, raw: &str) -> anyhow::Result<i64> {
    let raw = raw.trim();
    let negative = || anyhow!("limit value must be 0 or more, got {raw}");
    if limit_type != LimitType::MonthlyCost {
        let v: i64 = raw
            .parse()
            .map_err(|_| anyhow!("limit value must be a whole number, got {raw:?}"))?;
        if v < 0 {
            return Err(negative());
        }
        return Ok(v);
    }
    let s = raw.strip_prefix('$').unwrap_or(raw);
    if s.starts_with('-') {
        return Err(negative());
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = || {
        anyhow!("a monthly_cost value is US dollars with up to 6 decimals (e.g. 25 or 12.50), got {raw:?}")
    };
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(bad)
}

/// Formats a limit value in its unit (dollars for cost).
pub fn format_limit_value(limit_type: LimitType, value: i64) -> String {
    match limit_type {
        LimitType::MonthlyCost => format!("${}.{:06}", value / 1_000_000, value % 1_000_000),
        _ => value.to_string(),
    }
}

async fn limit(store: &Store, c: LimitCmd, json: bool) -> anyhow::Result<()> {
    let (org, limits) = match c {
        LimitCmd::Set {
            org,
            limit_type,
            value,
            alert,
            disabled,
        } => {
            let limit_type: LimitType = limit_type.parse()?;
            let value = parse_limit_value(limit_type, &value)?;
            let alert_threshold = i32::try_from(alert)
                .ok()
                .filter(|a| (1..=100).contains(a))
                .ok_or_else(|| {
                    anyhow!("alert threshold must be a percent between 1 and 100, got {alert}")
                })?;
            let org = store.resolve_org(&org).await?;
            let spec = LimitSpec {
                limit_type,
                value,
                alert_threshold,
                enabled: !disabled,
            };
            let l = store.set_limit(org.id, &spec).await?;
            store
                .audit(
                    ACTOR,
                    "limit.set",
                    Some(org.id),
                    limit_type.as_str(),
                    &serde_json::to_string(&spec)?,
                )
                .await?;
            (org, vec![l])
        }
        LimitCmd::List { org } => {
            let org = store.resolve_org(&org).await?;
            let limits = store.list_limits(org.id).await?;
            (org, limits)
        }
        LimitCmd::Remove { org, limit_type } => {
            let limit_type: LimitType = limit_type.parse()?;
            let org = store.resolve_org(&org).await?;
            store.remove_limit(org.id, limit_type).await?;
            store
                .audit(ACTOR, "limit.remove", Some(org.id), limit_type.as_str(), "")
                .await?;
            return done(
                json,
                &format!("removed the {limit_type} limit of {}", org.name),
            );
        }
    };
    if json {
        return output::json(&limits);
    }
    let rows = limits
        .iter()
        .map(|l| {
            vec![
                org.name.clone(),
                l.limit_type.to_string(),
                format_limit_value(l.limit_type, l.value),
                format!("{}%", l.alert_threshold),
                if l.enabled { "enabled" } else { "disabled" }.into(),
            ]
        })
        .collect::<Vec<_>>();
    output::table(&["ORG", "TYPE", "VALUE", "ALERT", "STATE"], &rows);
    Ok(())
}

fn parse_day(what: &str, v: &str) -> anyhow::Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
        .map_err(|_| anyhow!("--{what} must be a date like 2026-11-28, got {v:?}"))
}

/// Formats micro-dollars as dollars.
fn dollars(micros: i64) -> String {
    format!("${}.{:06}", micros / 1_000_000, (micros % 1_000_000).abs())
}

#[derive(Serialize)]
struct UsageReport {
    org: String,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    totals: store::UsageTotals,
    by_model: Vec<store::UsageTotals>,
    by_operation: Vec<store::UsageTotals>,
}

async fn usage(
    store: &Store,
    org: &str,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use chrono::{Datelike, Duration, Utc};
    let today = Utc::now().date_naive();
    let from = match from {
        Some(v) => parse_day("from", v)?,
        None => today.with_day(1).unwrap_or(today),
    };
    let to = match to {
        Some(v) => parse_day("to", v)?,
        None => today,
    };
    if to < from {
        bail!("--to ({to}) is before --from ({from})");
    }
    let org = store.resolve_org(org).await?;
    let start = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = (to + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let totals = store
        .usage_totals(org.id, start, end, store::GroupBy::Nothing)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let by_model = store
        .usage_totals(org.id, start, end, store::GroupBy::Model)
        .await?;
    let by_operation = store
        .usage_totals(org.id, start, end, store::GroupBy::Operation)
        .await?;
    let report = UsageReport {
        org: org.name.clone(),
        from,
        to,
        totals,
        by_model,
        by_operation,
    };
    if json {
        return output::json(&report);
    }
    output::line(&format!("usage of {} from {from} to {to} (UTC)", org.name));
    let row = |name: &str, t: &store::UsageTotals| {
        vec![
            name.to_owned(),
            t.requests.to_string(),
            t.input_tokens.to_string(),
            t.output_tokens.to_string(),
            t.thinking_tokens.to_string(),
            t.cached_tokens.to_string(),
            t.images.to_string(),
            t.video_seconds.to_string(),
            dollars(t.cost_micros),
        ]
    };
    let headers = [
        "", "REQUESTS", "INPUT", "OUTPUT", "THINKING", "CACHED", "IMAGES", "VIDEO_S", "COST",
    ];
    let mut rows = vec![row("total", &report.totals)];
    rows.extend(
        report
            .by_model
            .iter()
            .map(|t| row(&format!("model {}", t.group_key), t)),
    );
    rows.extend(
        report
            .by_operation
            .iter()
            .map(|t| row(&format!("operation {}", t.group_key), t)),
    );
    output::table(&headers, &rows);
    Ok(())
}

async fn events(store: &Store, org: &str, limit: i64, json: bool) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&limit) {
        bail!("--limit must be between 1 and 10000, got {limit}");
    }
    let org = store.resolve_org(org).await?;
    let events = store.recent_events(org.id, limit).await?;
    if json {
        return output::json(&events);
    }
    let rows = events
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
                dollars(e.cost_micros),
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
        .collect::<Vec<_>>();
    output::table(
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
        &rows,
    );
    Ok(())
}

fn done(json: bool, message: &str) -> anyhow::Result<()> {
    if json {
        return output::json(&serde_json::json!({ "ok": true, "message": message }));
    }
    output::line(message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_values_are_dollars_stored_as_micros() {
        let c = LimitType::MonthlyCost;
        assert_eq!(parse_limit_value(c, "25").unwrap(), 25_000_000);
        assert_eq!(parse_limit_value(c, "$12.5").unwrap(), 12_500_000);
        assert_eq!(parse_limit_value(c, "0.000001").unwrap(), 1);
        assert!(parse_limit_value(c, "-1").is_err());
        assert!(
            parse_limit_value(c, "1.0000001").is_err(),
            "more than micro-dollar precision"
        );
        assert!(parse_limit_value(c, "abc").is_err());
        assert_eq!(format_limit_value(c, 12_500_000), "$12.500000");
    }

    #[test]
    fn counts_are_whole_non_negative_numbers() {
        let t = LimitType::DailyRequests;
        assert_eq!(parse_limit_value(t, "50").unwrap(), 50);
        assert!(parse_limit_value(t, "-5")
            .unwrap_err()
            .to_string()
            .contains("0 or more"));
        assert!(parse_limit_value(t, "1.5").is_err());
    }
}
