//! Wiring for `serve`, `gateway` and `admin`: one tokio runtime for the store, the admin service
//! and the gateway's background work; the pingora proxy on its own thread; shutdown on Ctrl-C
//! (fast) or SIGTERM (graceful).

use std::time::Duration;

use anyhow::Context;
use store::Store;

use crate::config::{redact_url, Credential, ProviderSettings, Settings};

/// Which services a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// The proxy and its metrics listener.
    pub gateway: bool,
    /// The admin service.
    pub admin: bool,
}

impl Services {
    /// `tollgate serve`
    pub const ALL: Services = Services {
        gateway: true,
        admin: true,
    };
    /// `tollgate gateway`
    pub const GATEWAY: Services = Services {
        gateway: true,
        admin: false,
    };
    /// `tollgate admin`
    pub const ADMIN: Services = Services {
        gateway: false,
        admin: true,
    };
}

/// Services started in this process.
pub struct Running {
    /// The gateway, when started.
    pub gateway: Option<gateway::RunningGateway>,
    /// The admin service, when started.
    pub admin: Option<admin::RunningAdmin>,
    /// The store they share.
    pub store: Store,
    /// Deletes rows past their retention in the background.
    pruner: crate::retention::Pruner,
}

impl Running {
    /// Stops everything: the proxy first (so no new requests), then the admin service.
    pub async fn stop(self, how: gateway::Stop) {
        self.pruner.stop().await;
        if let Some(g) = self.gateway {
            g.stop(how).await;
        }
        if let Some(a) = self.admin {
            a.stop().await;
        }
        self.store.close().await;
    }
}

/// The gateway's settings from the validated configuration.
pub fn gateway_settings(s: &Settings) -> gateway::GatewaySettings {
    let g = &s.raw.gateway;
    let upstream = |p: &ProviderSettings| gateway::UpstreamSettings {
        base_url: p.base_url.clone(),
        credential: p.credential.as_ref().map(|c| match c {
            Credential::ApiKey(k) => gateway::Credential::ApiKey(k.clone()),
            Credential::Bearer(t) => gateway::Credential::Bearer(t.clone()),
        }),
        credential_env: p.credential_env.clone(),
    };
    gateway::GatewaySettings {
        listen: s.gateway_listen,
        metrics_listen: s.metrics_listen,
        threads: g.threads,
        work_stealing: g.work_stealing,
        gemini: upstream(&s.gemini),
        vertex: upstream(&s.vertex),
        connect_timeout: Duration::from_millis(g.upstream_connect_timeout_ms),
        read_timeout: Duration::from_millis(g.upstream_read_timeout_ms),
        idle_timeout: Duration::from_millis(g.upstream_idle_timeout_ms),
        upstream_ca_file: (!g.upstream_ca_file.is_empty()).then(|| g.upstream_ca_file.clone()),
        refresh_interval: Duration::from_secs(g.refresh_secs),
        shutdown_grace: Duration::from_secs(g.shutdown_grace_secs),
        public_url: (!g.public_url.is_empty())
            .then(|| url::Url::parse(&g.public_url).ok())
            .flatten(),
        ledger: gateway::settings::LedgerSettings {
            spool_path: s.raw.ledger.spool_path.clone().into(),
            queue_capacity: s.raw.ledger.queue_capacity,
            batch_size: s.raw.ledger.batch_size,
            flush_interval: Duration::from_millis(s.raw.ledger.flush_ms),
            fsync_interval: (s.raw.ledger.fsync_ms > 0)
                .then(|| Duration::from_millis(s.raw.ledger.fsync_ms)),
        },
        clients: gateway::settings::ClientLimits {
            header_timeout: Duration::from_millis(g.header_timeout_ms),
            idle_timeout: Duration::from_secs(g.client_idle_timeout_secs),
            max_connections_per_address: g.max_connections_per_address,
            max_header_bytes: g.max_header_bytes,
            max_headers: g.max_headers,
            max_body_bytes: g.max_body_bytes,
            allow_unknown_operations: g.allow_unknown_operations,
        },
        pricing_path: s.raw.pricing.path.clone().into(),
        pricing_reload: Duration::from_secs(s.raw.pricing.reload_secs),
        max_org_labels: s.raw.metrics.max_org_labels,
        access_log: gateway::settings::AccessLogSettings {
            // Off when the log filter drops target `access` at info (as `tracing` would).
            format: tracing::enabled!(target: "access", tracing::Level::INFO).then_some(
                if s.raw.log.format == "json" {
                    gateway::settings::AccessFormat::Json
                } else {
                    gateway::settings::AccessFormat::Text
                },
            ),
            sink: LOG_SINK
                .get()
                .cloned()
                .unwrap_or_else(gateway::settings::LogSink::stderr),
        },
        limits: gateway::settings::LimitSettings {
            sync_interval: Duration::from_secs(s.raw.limits.sync_secs),
            default_output_tokens: s.raw.limits.default_output_tokens,
            webhook: url::Url::parse(&s.raw.limits.webhook_url).ok().map(|url| {
                gateway::settings::WebhookSettings {
                    url,
                    timeout: Duration::from_millis(s.raw.limits.webhook_timeout_ms),
                    retries: s.raw.limits.webhook_retries,
                }
            }),
            saved_config_path: (!s.raw.limits.saved_config_path.is_empty())
                .then(|| s.raw.limits.saved_config_path.clone().into()),
            instance_id: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            ),
        },
    }
}

/// The admin service's settings from the validated configuration.
pub fn admin_settings(s: &Settings) -> admin::AdminSettings {
    let a = &s.raw.admin;
    admin::AdminSettings {
        listen: s.admin_listen,
        session_idle: chrono::Duration::minutes(a.session_idle_mins.min(i32::MAX as u64) as i64),
        session_lifetime: chrono::Duration::hours(
            a.session_lifetime_hours.min(i32::MAX as u64) as i64
        ),
        secure_cookies: s.admin_secure_cookies,
        features_on: s.features_on.clone(),
        login_max_failures: a.login_max_failures,
        login_window: Duration::from_secs(a.login_window_secs),
        gateway_url: match s.raw.gateway.public_url.trim() {
            "" => format!("http://{}", s.gateway_listen),
            u => u.trim_end_matches('/').to_owned(),
        },
        event_retention_days: s.raw.ledger.retention_days,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "gateway".into())
}

/// Opens the store, applies migrations and starts the requested services. Call on a
/// multi-thread runtime that outlives the services.
pub async fn start(settings: &Settings, services: Services) -> anyhow::Result<Running> {
    let store = Store::connect_lazy(&settings.database_url, &settings.connect)
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                redact_url(&settings.database_url)
            )
        })?;
    match store.migrate().await {
        Ok(()) => {}
        // A gateway starts without its database (fail-open) and migrates once it answers.
        Err(e) if services.gateway && e.is_unavailable() => {
            tracing::error!(error = %e, "database unreachable at start-up: starting degraded (limits not enforced) until it answers");
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if store.migrate().await.is_ok() {
                        tracing::info!("database reachable again; migrations applied");
                        return;
                    }
                }
            });
        }
        Err(e) => return Err(e).context("cannot apply migrations"),
    }
    let admin = match services.admin {
        true => Some(admin::start(admin_settings(settings), store.clone()).await?),
        false => None,
    };
    let gateway = match services.gateway {
        true => Some(gateway::start(gateway_settings(settings), store.clone()).await?),
        false => None,
    };
    let raw = &settings.raw;
    let retention = crate::retention::Retention::from_days(
        raw.ledger.retention_days,
        raw.limits.alert_retention_days,
        raw.admin.audit_retention_days,
    );
    let db = crate::retention::Db::new(settings, store.clone());
    let pruner = crate::retention::start(
        db,
        retention,
        std::time::Duration::from_secs(raw.ledger.prune_interval_secs),
    )
    .context("cannot start the pruner's thread")?;
    Ok(Running {
        gateway,
        admin,
        store,
        pruner,
    })
}

/// Runs services until Ctrl-C (fast stop) or SIGTERM (graceful stop).
pub fn run(settings: Settings, services: Services) -> anyhow::Result<()> {
    // Held until the end of `run`: dropping it flushes the log lines still buffered.
    let _log_guard = init_logging(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-bg")
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Listen for signals before any port opens: a SIGTERM that arrives while starting must
        // stop us cleanly, not kill the process with the default disposition.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let running = start(&settings, services).await?;
        tokio::spawn(async {
            loop {
                lower_background_priority();
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        tracing::info!(database = %redact_url(&settings.database_url), "tollgate started; Ctrl-C or SIGTERM stops it");
        let how = tokio::select! {
            _ = int.recv() => gateway::Stop::Fast,
            _ = term.recv() => gateway::Stop::Graceful,
        };
        tracing::info!(how = ?how, "stopping");
        running.stop(how).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Threads that do background work: this runtime's (ledger writer, admin, sync), the database
/// connections' (sqlx runs each SQLite connection on its own thread) and the log writer.
const BACKGROUND_THREADS: [&str; 3] = ["tollgate-bg", "sqlx-sqlite", "tollgate-log"];
/// Their nice value. When the proxy shares a core with them (a 1-CPU container, a saturated
/// machine), the scheduler otherwise lets a ledger batch of a thousand events run for
/// milliseconds while requests wait: pinned to one core at 13k requests/s, p90 went from
/// 6.8 ms to 1.2 ms with this. Nice 10 still leaves them a tenth of a contended core, enough
/// for the ledger at full load.
const BACKGROUND_NICE: i32 = 10;

/// Lowers the background threads' priority below the proxy's workers (Linux; threads that
/// appear later, such as new database connections, are caught by the next call).
fn lower_background_priority() {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if !BACKGROUND_THREADS.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let tid = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok());
            let Some(pid) = tid.and_then(rustix::process::Pid::from_raw) else {
                continue;
            };
            // Lowered only: the pruner's connection runs lower still (`retention::NICE`).
            if rustix::process::getpriority_process(Some(pid)).is_ok_and(|n| n < BACKGROUND_NICE) {
                // On Linux a thread id names one thread here, not the whole process.
                if let Err(e) = rustix::process::setpriority_process(Some(pid), BACKGROUND_NICE) {
                    tracing::debug!(thread = name.trim(), error = %e, "cannot lower a background thread's priority");
                }
            }
        }
    }
}

/// The log writer, shared with the gateway's access log so all lines form one ordered stream.
static LOG_SINK: std::sync::OnceLock<gateway::settings::LogSink> = std::sync::OnceLock::new();

/// Logs to stderr, text or JSON, level from `RUST_LOG` or the config (pingora kept at warn).
fn init_logging(
    settings: &Settings,
) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let log = &settings.raw.log;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => tracing_subscriber::EnvFilter::try_new(v)?,
        _ => tracing_subscriber::EnvFilter::try_new(format!(
            "{},pingora_core=warn,pingora_proxy=warn",
            log.level
        ))?,
    };
    // Colours only on a terminal: a log file or a pipeline gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Not lossy: when the buffer is full, logging waits rather than dropping lines.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("tollgate-log")
        .finish(std::io::stderr());
    let sink = writer.clone();
    let _ = LOG_SINK.set(gateway::settings::LogSink::new(move |b| {
        let _ = std::io::Write::write_all(&mut sink.clone(), b);
    }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let result = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(guard)
}
