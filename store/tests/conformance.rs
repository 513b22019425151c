//! The store conformance suite: every test runs against SQLite and, when
//! `TOLLGATE_TEST_POSTGRES` names a server, against PostgreSQL too (each test in its own schema).

// Tests may unwrap and panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{Duration, TimeZone, Utc};
use store::*;

mod common;

static SEQ: AtomicU32 = AtomicU32::new(0);

async fn sqlite() -> (Store, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/t.db", dir.path().display());
    let s = Store::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    s.migrate().await.unwrap();
    (s, Some(dir))
}

async fn postgres() -> Option<Store> {
    let Ok(url) = std::env::var("TOLLGATE_TEST_POSTGRES") else {
        common::missing("TOLLGATE_TEST_POSTGRES is not set (PostgreSQL half of the store suite)");
        return None;
    };
    let schema = format!(
        "tg_test_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros()
    );
    let opts = ConnectOptions {
        pg_schema: Some(schema),
        max_connections: 4,
        ..Default::default()
    };
    let s = Store::connect(&url, &opts).await.unwrap_or_else(|e| {
        panic!("TOLLGATE_TEST_POSTGRES is set but PostgreSQL is unreachable: {e}")
    });
    s.migrate().await.unwrap();
    Some(s)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() { let (s, _dir) = super::sqlite().await; super::$name(s).await })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() {
                let Some(s) = super::postgres().await else { return };
                super::$name(s).await
            })*
        }
    };
}

conformance!(
    migrations_rerun_harmlessly,
    organizations,
    users_and_passwords,
    memberships,
    api_keys,
    feature_flags,
    usage_limits,
    usage_events_are_idempotent_and_rolled_up,
    large_batches_with_repeats_are_stored_once,
    events_naming_what_no_longer_exists_are_kept_without_it,
    limit_alerts_fire_once_per_period,
    audit_log,
    audited_changes_write_their_row_in_the_same_transaction,
    sessions_expire_and_end,
    personal_tokens,
    rollup_reports_by_user_and_key_last_use,
    gateway_heartbeats,
    config_version_moves_with_every_change_gateways_load,
    resource_owners_first_claim_wins_and_loads_incrementally,
    table_stats_and_pruning_in_batches,
);

/// An in-memory SQLite database (which no second connection can see) keeps every write on the
/// pool: events are stored and rolled up there too.
#[tokio::test]
async fn in_memory_sqlite_stores_events() {
    let s = Store::connect(
        "sqlite::memory:",
        &ConnectOptions {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.migrate().await.unwrap();
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let now = Utc::now();
    let batch = vec![
        event("m1", Some(org.id), now, "gemini-2.5-flash"),
        event("m2", Some(org.id), now, "gemini-2.5-flash"),
    ];
    let (back, stored) = s.write_events(batch.clone()).await;
    assert_eq!((back, stored.unwrap()), (batch, 2));
    assert_eq!(s.count_events(org.id).await.unwrap(), 2);
}

#[test]
fn migration_folders_move_in_lockstep() {
    let (sqlite, postgres) = Store::migration_versions();
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "every migration must exist for both dialects"
    );
}

async fn migrations_rerun_harmlessly(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(
        s.get_org(org.id).await.unwrap().name,
        "acme",
        "data survives a re-run"
    );
}

async fn organizations(s: Store) {
    for bad in ["a/b", "what?", "50%", "x#y"] {
        assert!(
            matches!(
                s.create_org(bad, Feature::ALL).await,
                Err(StoreError::Validation(_))
            ),
            "{bad:?} cannot be a path segment"
        );
    }
    let a = s.create_org("acme", Feature::ALL).await.unwrap();
    let b = s.create_org("  globex ", Feature::ALL).await.unwrap();
    assert_eq!(b.name, "globex", "names are trimmed");
    assert_eq!(s.resolve_org("acme").await.unwrap(), a);
    assert_eq!(s.resolve_org(&a.id.to_string()).await.unwrap(), a);
    assert!(matches!(
        s.create_org("acme", &[]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.create_org("", &[]).await,
        Err(StoreError::Validation(_))
    ));
    assert!(
        matches!(
            s.create_org("42", &[]).await,
            Err(StoreError::Validation(_))
        ),
        "numeric names clash with ids"
    );
    assert_eq!(s.list_orgs().await.unwrap().len(), 2);
    let renamed = s.rename_org(a.id, "acme-corp").await.unwrap();
    assert_eq!(renamed.name, "acme-corp");
    assert!(matches!(
        s.rename_org(a.id, "globex").await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(s.get_org(9999).await, Err(StoreError::NotFound(m)) if m.contains("9999")));
    assert!(matches!(
        s.resolve_org("nope").await,
        Err(StoreError::NotFound(_))
    ));

    // Deleting an org removes what belongs to it.
    let (k, _) = s.create_key(b.id, KeyKind::App, "k", None).await.unwrap();
    s.delete_org(b.id).await.unwrap();
    assert!(matches!(
        s.get_key(k.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_org(b.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn users_and_passwords(s: Store) {
    let u = s
        .create_user("Ada@Example.com", "correct horse", true)
        .await
        .unwrap();
    assert_eq!(u.email, "ada@example.com");
    assert!(u.is_superuser);
    assert!(matches!(
        s.create_user("ada@example.com", "another one", false).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.create_user("not-an-email", "long enough", false).await,
        Err(StoreError::Validation(_))
    ));
    assert!(matches!(
        s.create_user("b@example.com", "short", false).await,
        Err(StoreError::Validation(_))
    ));
    let (found, hash) = s.login_record("ADA@example.com").await.unwrap().unwrap();
    assert_eq!(found, u, "emails are case-insensitive");
    assert!(verify_password("correct horse", &hash));
    assert!(!verify_password("wrong", &hash));
    assert!(!hash.contains("correct horse"), "only a hash is stored");
    assert!(s
        .login_record("nobody@example.com")
        .await
        .unwrap()
        .is_none());
    assert!(
        !verify_password("correct horse", dummy_password_hash()),
        "the dummy hash is a valid hash that matches nothing typed"
    );
    s.set_password(u.id, "battery staple").await.unwrap();
    let (_, hash) = s.login_record("ada@example.com").await.unwrap().unwrap();
    assert!(verify_password("battery staple", &hash));
    let u = s.set_superuser(u.id, false).await.unwrap();
    assert!(!u.is_superuser);
    assert_eq!(s.resolve_user("ada@example.com").await.unwrap().id, u.id);
    assert_eq!(s.list_users().await.unwrap().len(), 1);
    s.delete_user(u.id).await.unwrap();
    assert!(matches!(
        s.get_user(u.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn memberships(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let u = s
        .create_user("a@example.com", "password1", false)
        .await
        .unwrap();
    let m = s.add_member(org.id, u.id, Role::Admin).await.unwrap();
    assert_eq!((m.role, m.email.as_str()), (Role::Admin, "a@example.com"));
    assert!(matches!(
        s.add_member(org.id, u.id, Role::Member).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(
        matches!(
            s.add_member(org.id, 9999, Role::Member).await,
            Err(StoreError::Invalid(_))
        ),
        "a missing user is a foreign-key error, not a panic"
    );
    assert_eq!(
        s.set_role(org.id, u.id, Role::Owner).await.unwrap().role,
        Role::Owner
    );
    assert!(matches!(
        s.set_role(org.id, 9999, Role::Owner).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.list_members(org.id).await.unwrap().len(), 1);
    assert_eq!(s.memberships_of(u.id).await.unwrap()[0].org_id, org.id);
    // The last owner stays: neither removed nor demoted.
    assert!(matches!(
        s.remove_member(org.id, u.id).await,
        Err(StoreError::LastOwner)
    ));
    assert!(matches!(
        s.set_role(org.id, u.id, Role::Member).await,
        Err(StoreError::LastOwner)
    ));
    let other = s
        .create_user("b@example.com", "correct horse", false)
        .await
        .unwrap();
    s.add_member(org.id, other.id, Role::Owner).await.unwrap();
    s.remove_member(org.id, u.id).await.unwrap();
    assert_eq!(s.list_members(org.id).await.unwrap().len(), 1);
    assert!(matches!(
        s.remove_member(org.id, u.id).await,
        Err(StoreError::NotFound(_))
    ));
    // A change authorized against a role that has changed meanwhile is refused.
    let a = Audit::new("x", "member.role");
    assert!(matches!(
        s.set_role_audited(org.id, other.id, Role::Admin, Role::Member, &a)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.remove_member_audited(org.id, other.id, Role::Admin, &a)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.get_membership(org.id, other.id).await.unwrap().role,
        Role::Owner
    );
    // An org without owners (made by the CLI) may lose members freely.
    let bare = s.create_org("bare", Feature::ALL).await.unwrap();
    s.add_member(bare.id, u.id, Role::Member).await.unwrap();
    s.remove_member(bare.id, u.id).await.unwrap();
    assert!("boss".parse::<Role>().is_err());
}

async fn api_keys(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let (k, secret) = s
        .create_key(org.id, KeyKind::Service, "backend", None)
        .await
        .unwrap();
    assert!(secret.starts_with("tg_") && secret.len() >= 35);
    assert_eq!(k.key_hash, hash_key(&secret), "only the hash is stored");
    assert!(secret.starts_with(&k.prefix) && k.prefix.len() < secret.len());
    assert_eq!(k.kind, KeyKind::Service);
    assert_eq!(
        ActsFor::from_db(&k.acts_for),
        ActsFor::Own,
        "own org only by default"
    );
    let other = s.create_org("globex", Feature::ALL).await.unwrap();
    let (wide, _) = s
        .create_service_key(org.id, "wide", &ActsFor::Orgs(vec![other.id]))
        .await
        .unwrap();
    assert_eq!(
        ActsFor::from_db(&s.get_key(wide.id).await.unwrap().acts_for),
        ActsFor::Orgs(vec![other.id])
    );
    assert!(
        matches!(
            s.create_key_audited(
                org.id,
                KeyKind::App,
                "app",
                None,
                &ActsFor::Any,
                &Audit::new("t", "key.create")
            )
            .await,
            Err(StoreError::Validation(_))
        ),
        "an app key acts for its org only"
    );
    s.revoke_key(wide.id).await.unwrap();
    let active = s.active_keys().await.unwrap();
    assert_eq!(active.len(), 1);
    assert!(matches!(
        s.insert_key_hash(org.id, KeyKind::App, "dup", None, "tg_x", &k.key_hash)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.create_key(9999, KeyKind::App, "", None).await,
        Err(StoreError::Invalid(_))
    ));
    let revoked = s.revoke_key(k.id).await.unwrap();
    assert!(!revoked.is_active());
    let again = s.revoke_key(k.id).await.unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "revoking twice keeps the first time"
    );
    assert!(s.active_keys().await.unwrap().is_empty());
    assert_eq!(
        s.list_keys(org.id).await.unwrap().len(),
        2,
        "revoked keys stay listed"
    );
    assert!(matches!(
        s.revoke_key(9999).await,
        Err(StoreError::NotFound(_))
    ));
    s.delete_key(k.id).await.unwrap();
    s.delete_key(wide.id).await.unwrap();
    assert!(s.list_keys(org.id).await.unwrap().is_empty());
}

async fn feature_flags(s: Store) {
    let on: Vec<Feature> = Feature::ALL
        .iter()
        .copied()
        .filter(|f| *f != Feature::VideoGeneration)
        .collect();
    let org = s.create_org("acme", &on).await.unwrap();
    let flags = s.list_features(org.id).await.unwrap();
    assert_eq!(flags.len(), 11);
    for f in &flags {
        assert_eq!(
            f.enabled,
            f.feature != Feature::VideoGeneration,
            "{}",
            f.feature
        );
    }
    s.set_feature(org.id, Feature::Streaming, false)
        .await
        .unwrap();
    s.set_feature(org.id, Feature::VideoGeneration, true)
        .await
        .unwrap();
    let mut off: Vec<_> = s
        .disabled_features()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.feature)
        .collect();
    off.sort();
    assert_eq!(off, vec![Feature::Streaming]);
    assert!(matches!(
        s.set_feature(9999, Feature::Streaming, true).await,
        Err(StoreError::NotFound(_))
    ));
    assert!("teleport".parse::<Feature>().is_err());
}

async fn usage_limits(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let spec = LimitSpec {
        limit_type: LimitType::DailyRequests,
        value: 50,
        alert_threshold: 80,
        enabled: true,
    };
    let l = s.set_limit(org.id, &spec).await.unwrap();
    assert_eq!((l.value, l.alert_threshold, l.enabled), (50, 80, true));
    let l2 = s
        .set_limit(
            org.id,
            &LimitSpec {
                value: 60,
                enabled: false,
                ..spec.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        l2.id, l.id,
        "one limit per org and type: setting again replaces it"
    );
    assert_eq!((l2.value, l2.enabled), (60, false));
    s.set_limit(
        org.id,
        &LimitSpec {
            limit_type: LimitType::MonthlyCost,
            value: 5_000_000,
            ..spec.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.list_limits(org.id).await.unwrap().len(), 2);
    assert_eq!(s.all_limits().await.unwrap().len(), 2);
    assert!(matches!(
        s.set_limit(
            org.id,
            &LimitSpec {
                value: -1,
                ..spec.clone()
            }
        )
        .await,
        Err(StoreError::Validation(_))
    ));
    assert!(matches!(
        s.set_limit(
            org.id,
            &LimitSpec {
                alert_threshold: 101,
                ..spec.clone()
            }
        )
        .await,
        Err(StoreError::Validation(_))
    ));
    assert!(matches!(
        s.set_limit(9999, &spec).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.get_limit(org.id, LimitType::MonthlyCost)
            .await
            .unwrap()
            .value,
        5_000_000
    );
    s.remove_limit(org.id, LimitType::DailyRequests)
        .await
        .unwrap();
    assert!(matches!(
        s.remove_limit(org.id, LimitType::DailyRequests).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_limit(org.id, LimitType::DailyRequests).await,
        Err(StoreError::NotFound(_))
    ));
    assert!("weekly_fun".parse::<LimitType>().is_err());
}

fn event(id: &str, org: Option<i64>, at: chrono::DateTime<Utc>, model: &str) -> UsageEvent {
    UsageEvent {
        request_id: id.into(),
        client_request_id: Some(format!("client-{id}")),
        occurred_at: at,
        org_id: org,
        key_id: None,
        user_ref: Some("u1".into()),
        tool: None,
        provider: "gemini".into(),
        model: model.into(),
        operation: "generateContent".into(),
        status: 200,
        streamed: false,
        metered: true,
        input_tokens: 10,
        output_tokens: 20,
        thinking_tokens: 5,
        cached_tokens: 2,
        tool_prompt_tokens: 0,
        total_tokens: 35,
        input_audio_tokens: 0,
        output_image_tokens: 0,
        images: 1,
        videos: 0,
        video_seconds: 0,
        cost_micros: 1234,
        estimated: false,
        priced: true,
        upstream_latency_ms: Some(12),
        total_latency_ms: 13,
    }
}

async fn usage_events_are_idempotent_and_rolled_up(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let batch = vec![
        event("r1", Some(org.id), now, "gemini-2.5-flash"),
        event("r2", Some(org.id), now, "gemini-2.5-pro"),
        event(
            "r3",
            Some(org.id),
            now - Duration::days(1),
            "gemini-2.5-flash",
        ),
        event("r4", None, now, "gemini-2.5-flash"),
        // Not metered (countTokens): stored, but outside the rollups and the limit counters.
        UsageEvent {
            metered: false,
            operation: "countTokens".into(),
            input_tokens: 0,
            output_tokens: 0,
            thinking_tokens: 0,
            cached_tokens: 0,
            total_tokens: 0,
            images: 0,
            cost_micros: 0,
            ..event("r5", Some(org.id), now, "gemini-2.5-flash")
        },
    ];
    assert_eq!(s.insert_events(&batch).await.unwrap(), 5);
    assert_eq!(
        s.insert_events(&batch[..2]).await.unwrap(),
        0,
        "a replayed batch stores nothing new"
    );
    assert_eq!(s.count_events(org.id).await.unwrap(), 4);
    assert_eq!(
        s.get_event("r2").await.unwrap(),
        batch[1],
        "an event reads back exactly"
    );
    assert_eq!(
        s.get_event("client-r2").await.unwrap(),
        batch[1],
        "and by the client's request id"
    );

    // Reports read the rollups: only metered events are requests.
    let day = now.date_naive();
    let total = s
        .rollup_usage(
            Some(org.id),
            day - Duration::days(30),
            day + Duration::days(1),
            RollupGroup::Nothing,
        )
        .await
        .unwrap();
    assert_eq!(total.len(), 1);
    assert_eq!(
        (
            total[0].requests,
            total[0].total_tokens,
            total[0].cost_micros
        ),
        (3, 105, 3702),
        "the countTokens event is not a request"
    );
    let by_model = s
        .rollup_usage(
            Some(org.id),
            day - Duration::days(30),
            day + Duration::days(1),
            RollupGroup::Model,
        )
        .await
        .unwrap();
    assert_eq!(
        by_model
            .iter()
            .map(|t| (t.group_key.as_str(), t.requests))
            .collect::<Vec<_>>(),
        vec![("gemini-2.5-flash", 2), ("gemini-2.5-pro", 1)]
    );
    let empty = s
        .rollup_usage(
            Some(org.id),
            day + Duration::days(5),
            day + Duration::days(6),
            RollupGroup::Nothing,
        )
        .await
        .unwrap();
    assert_eq!(empty[0].requests, 0);

    let rollups = s
        .daily_rollups(
            org.id,
            now.date_naive() - Duration::days(1),
            now.date_naive(),
        )
        .await
        .unwrap();
    assert_eq!(rollups.len(), 3);
    assert_eq!(
        rollups.iter().map(|r| r.requests).sum::<i64>(),
        3,
        "replays do not double the rollups"
    );

    let periods = s
        .period_usage(now.date_naive(), now.date_naive().with_day0(0).unwrap())
        .await
        .unwrap();
    assert_eq!(periods.len(), 1);
    let p = &periods[0];
    assert_eq!(
        (
            p.day_requests,
            p.day_ads,
            p.month_tokens,
            p.month_cost_micros
        ),
        (2, 2, 105, 3702)
    );

    let recent = s.recent_events(org.id, 2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert!(recent.iter().all(|e| e.occurred_at == now), "newest first");
}

use chrono::Datelike;

async fn limit_alerts_fire_once_per_period(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let first = s
        .record_alert(org.id, LimitType::MonthlyCost, "2026-11", 80, 100, 81)
        .await
        .unwrap();
    assert!(first.is_some());
    assert!(s
        .record_alert(org.id, LimitType::MonthlyCost, "2026-11", 80, 100, 90)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .record_alert(org.id, LimitType::MonthlyCost, "2026-11", 100, 100, 100)
        .await
        .unwrap()
        .is_some());
    assert!(s
        .record_alert(org.id, LimitType::MonthlyCost, "2026-12", 80, 100, 85)
        .await
        .unwrap()
        .is_some());
    assert_eq!(s.list_alerts(org.id).await.unwrap().len(), 3);
}

async fn audit_log(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    s.audit("cli", "org.create", Some(org.id), "acme", "")
        .await
        .unwrap();
    s.audit("cli", "user.create", None, "a@example.com", "{}")
        .await
        .unwrap();
    assert_eq!(s.list_audit(None, 10).await.unwrap().len(), 2);
    let mine = s.list_audit(Some(org.id), 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].action, "org.create");
}

async fn audited_changes_write_their_row_in_the_same_transaction(s: Store) {
    let a = |action| Audit::new("ada@example.com", action);
    let org = s
        .create_org_audited("acme", Feature::ALL, &a("org.create"))
        .await
        .unwrap();
    // A refused change leaves no audit row.
    assert!(s
        .create_org_audited("acme", Feature::ALL, &a("org.create"))
        .await
        .is_err());
    let spec = LimitSpec {
        limit_type: LimitType::DailyRequests,
        value: 5,
        alert_threshold: 80,
        enabled: true,
    };
    s.set_limit_audited(org.id, &spec, &a("limit.set"))
        .await
        .unwrap();
    assert!(matches!(
        s.remove_limit_audited(org.id, LimitType::MonthlyCost, &a("limit.remove"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    let (key, _) = s
        .create_key_audited(
            org.id,
            KeyKind::App,
            "k",
            None,
            &ActsFor::Own,
            &a("key.create"),
        )
        .await
        .unwrap();
    s.revoke_key_audited(key.id, &a("key.revoke"))
        .await
        .unwrap();
    let flags = s
        .set_features_audited(
            org.id,
            &[(Feature::Streaming, false), (Feature::VertexAi, false)],
            &a("feature.set"),
        )
        .await
        .unwrap();
    assert_eq!(flags.iter().filter(|f| !f.enabled).count(), 2);
    let log = s.list_audit(None, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "org.create",
            "limit.set",
            "key.create",
            "key.revoke",
            "feature.set"
        ],
        "one row per change that happened, none for those refused"
    );
    assert!(log
        .iter()
        .all(|e| e.org_id == Some(org.id) && e.actor == "ada@example.com"));
    assert_eq!(
        log[2].target,
        key.id.to_string(),
        "a created row's id is the target"
    );
    let page = s
        .audit_page(&AuditQuery {
            org_id: Some(org.id),
            before_id: Some(log[1].id),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![log[2].id, log[3].id]
    );
}

async fn sessions_expire_and_end(s: Store) {
    let u = s
        .create_user("a@example.com", "correct horse", false)
        .await
        .unwrap();
    let (secret, session) = s.create_session(u.id, Duration::hours(1)).await.unwrap();
    assert_ne!(secret, session.id_hash, "only the digest is stored");
    let (found, user) = s
        .session_user(&secret, Duration::minutes(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.csrf_token.as_str(), user.id),
        (session.csrf_token.as_str(), u.id)
    );
    assert!(s
        .session_user("nope", Duration::minutes(30))
        .await
        .unwrap()
        .is_none());
    let (expired, _) = s.create_session(u.id, Duration::seconds(-1)).await.unwrap();
    assert!(s
        .session_user(&expired, Duration::minutes(30))
        .await
        .unwrap()
        .is_none());
    // A password change ends every session but the one kept.
    let (other, _) = s.create_session(u.id, Duration::hours(1)).await.unwrap();
    s.set_password_audited(
        u.id,
        "battery staple",
        Some(&session.id_hash),
        &Audit::new("a", "user.password"),
    )
    .await
    .unwrap();
    assert!(s
        .session_user(&secret, Duration::minutes(30))
        .await
        .unwrap()
        .is_some());
    assert!(s
        .session_user(&other, Duration::minutes(30))
        .await
        .unwrap()
        .is_none());
    s.delete_session(&session.id_hash).await.unwrap();
    assert!(s
        .session_user(&secret, Duration::minutes(30))
        .await
        .unwrap()
        .is_none());
}

async fn personal_tokens(s: Store) {
    let u = s
        .create_user("a@example.com", "correct horse", false)
        .await
        .unwrap();
    let v = s
        .create_user("b@example.com", "correct horse", false)
        .await
        .unwrap();
    let a = Audit::new("a@example.com", "token.create");
    let (row, token) = s.create_token_audited(u.id, "ci", None, &a).await.unwrap();
    assert!(token.starts_with(TOKEN_PREFIX) && token.starts_with(&row.prefix));
    assert_eq!(
        s.token_user(&token).await.unwrap(),
        TokenCheck::Valid(s.get_user(u.id).await.unwrap())
    );
    assert_eq!(
        s.token_user("tgp_unknown").await.unwrap(),
        TokenCheck::Unknown
    );
    let (_, old) = s
        .create_token_audited(u.id, "old", Some(Utc::now() - Duration::seconds(1)), &a)
        .await
        .unwrap();
    assert_eq!(s.token_user(&old).await.unwrap(), TokenCheck::Expired);
    assert!(
        matches!(
            s.revoke_token_audited(v.id, row.id, &a).await,
            Err(StoreError::NotFound(_))
        ),
        "another user's token is not found"
    );
    s.revoke_token_audited(u.id, row.id, &a).await.unwrap();
    assert_eq!(s.token_user(&token).await.unwrap(), TokenCheck::Revoked);
    let listed = s.list_tokens(u.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().any(|t| t.last_used_at.is_some()),
        "use is recorded"
    );
}

async fn rollup_reports_by_user_and_key_last_use(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let (key, _) = s.create_key(org.id, KeyKind::App, "k", None).await.unwrap();
    let t = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let mut a = event("r1", Some(org.id), t, "gemini-2.5-flash");
    a.key_id = Some(key.id);
    let mut b = event(
        "r2",
        Some(org.id),
        t + Duration::minutes(5),
        "gemini-2.5-flash",
    );
    b.key_id = Some(key.id);
    b.user_ref = Some("u2".into());
    let mut c = event("r3", Some(org.id), t + Duration::days(1), "gemini-2.5-pro");
    c.user_ref = None;
    s.insert_events(&[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    let day = t.date_naive();
    let by_user = s
        .rollup_usage(
            Some(org.id),
            day,
            day + Duration::days(1),
            RollupGroup::User,
        )
        .await
        .unwrap();
    let mut users: Vec<(String, i64)> = by_user
        .iter()
        .map(|r| (r.group_key.clone(), r.requests))
        .collect();
    users.sort();
    assert_eq!(
        users,
        vec![("".into(), 1), ("u1".into(), 1), ("u2".into(), 1)]
    );
    let by_day = s
        .rollup_usage(Some(org.id), day, day + Duration::days(1), RollupGroup::Day)
        .await
        .unwrap();
    assert_eq!(
        by_day
            .iter()
            .map(|r| (r.group_key.as_str(), r.requests))
            .collect::<Vec<_>>(),
        vec![("2026-11-28", 2), ("2026-11-29", 1)]
    );
    let one_day = s
        .rollup_usage(Some(org.id), day, day, RollupGroup::Nothing)
        .await
        .unwrap();
    assert_eq!(one_day[0].requests, 2);
    let cross = s
        .rollup_usage(None, day, day + Duration::days(1), RollupGroup::Org)
        .await
        .unwrap();
    assert_eq!(
        (cross[0].group_key.as_str(), cross[0].requests),
        ("acme", 3)
    );
    let used = s.keys_last_used(org.id).await.unwrap();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].0, key.id);
    assert_eq!(
        used[0].1.timestamp_micros(),
        b.occurred_at.timestamp_micros(),
        "the newest use"
    );
    // A replay of the older event leaves the last use alone.
    s.insert_events(&[a]).await.unwrap();
    assert_eq!(
        s.keys_last_used(org.id).await.unwrap()[0]
            .1
            .timestamp_micros(),
        b.occurred_at.timestamp_micros()
    );
    // Paging the events by cursor visits each once, newest first.
    let first = s.event_page(org.id, None, 2).await.unwrap();
    assert_eq!(
        first
            .events
            .iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["r3", "r2"]
    );
    let rest = s.event_page(org.id, first.next.as_ref(), 2).await.unwrap();
    assert_eq!(
        rest.events
            .iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["r1"]
    );
    assert!(rest.next.is_none());
}

async fn gateway_heartbeats(s: Store) {
    let t0 = Utc::now() - Duration::seconds(5);
    s.heartbeat("gw-1", "0.1.0", false, None).await.unwrap();
    s.heartbeat("gw-1", "0.1.0", true, Some(Utc::now()))
        .await
        .unwrap();
    let live = s.live_instances(t0).await.unwrap();
    assert_eq!(live.len(), 1);
    assert!(live[0].degraded && live[0].last_sync.is_some());
    assert!(s
        .live_instances(Utc::now() + Duration::seconds(60))
        .await
        .unwrap()
        .is_empty());
}

async fn large_batches_with_repeats_are_stored_once(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let now = Utc::now();
    // More rows than one statement takes, and a request id repeated inside the batch.
    let mut batch: Vec<UsageEvent> = (0..1_200)
        .map(|i| event(&format!("b{i}"), Some(org.id), now, "gemini-2.5-flash"))
        .collect();
    batch.push(event("b7", Some(org.id), now, "gemini-2.5-flash"));
    assert_eq!(s.insert_events(&batch).await.unwrap(), 1_200);
    assert_eq!(s.count_events(org.id).await.unwrap(), 1_200);
    let day = now.date_naive();
    let rollups = s.daily_rollups(org.id, day, day).await.unwrap();
    assert_eq!(
        rollups.iter().map(|r| r.requests).sum::<i64>(),
        1_200,
        "each stored event counted once"
    );
    assert_eq!(
        rollups.iter().map(|r| r.cost_micros).sum::<i64>(),
        1_200 * 1234
    );
    assert_eq!(
        s.insert_events(&batch).await.unwrap(),
        0,
        "a replay of the whole batch stores nothing"
    );
    assert_eq!(
        s.daily_rollups(org.id, day, day).await.unwrap()[0].requests,
        1_200
    );
}

/// The ledger's batches (`write_events`) come back with the count. An event naming an org or a
/// key that no longer exists (deleted while the event was on its way) is stored without the
/// reference and stays out of the rollups; deleting an org deletes its events, deleting a key
/// clears it from its events. The same on both databases, though PostgreSQL's events have no
/// foreign keys (migration 5).
async fn events_naming_what_no_longer_exists_are_kept_without_it(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    let (key, _) = s.create_key(org.id, KeyKind::App, "k", None).await.unwrap();
    let now = Utc::now();
    let good: Vec<UsageEvent> = (0..3)
        .map(|i| UsageEvent {
            key_id: Some(key.id),
            ..event(&format!("w{i}"), Some(org.id), now, "gemini-2.5-flash")
        })
        .collect();
    let (back, stored) = s.write_events(good.clone()).await;
    assert_eq!((back, stored.unwrap()), (good.clone(), 3));
    let batch = vec![
        event("w3", Some(org.id), now, "gemini-2.5-flash"),
        event("w4", Some(org.id + 1_000), now, "gemini-2.5-flash"),
        UsageEvent {
            key_id: Some(key.id + 1_000),
            ..event("w5", Some(org.id), now, "gemini-2.5-flash")
        },
    ];
    let (back, stored) = s.write_events(batch.clone()).await;
    assert_eq!((back, stored.unwrap()), (batch, 3));
    assert_eq!(s.get_event("w4").await.unwrap().org_id, None);
    let w5 = s.get_event("w5").await.unwrap();
    assert_eq!((w5.org_id, w5.key_id), (Some(org.id), None));
    assert_eq!(s.count_events(org.id).await.unwrap(), 5);
    let day = now.date_naive();
    assert_eq!(
        s.daily_rollups(org.id, day, day).await.unwrap()[0].requests,
        5,
        "the event of the missing org is in no rollup"
    );

    s.delete_key(key.id).await.unwrap();
    assert_eq!(s.get_event("w0").await.unwrap().key_id, None);
    // A service key of another org names this one: deleting that org clears its key here.
    let other = s.create_org("other", Feature::ALL).await.unwrap();
    let (service, _) = s
        .create_key(other.id, KeyKind::Service, "svc", None)
        .await
        .unwrap();
    let named = UsageEvent {
        key_id: Some(service.id),
        ..event("w6", Some(org.id), now, "gemini-2.5-flash")
    };
    assert_eq!(s.insert_events(&[named]).await.unwrap(), 1);
    s.delete_org(other.id).await.unwrap();
    let w6 = s.get_event("w6").await.unwrap();
    assert_eq!((w6.org_id, w6.key_id), (Some(org.id), None));
    s.delete_org(org.id).await.unwrap();
    assert_eq!(s.count_events(org.id).await.unwrap(), 0);
    assert!(
        s.get_event("w0").await.is_err(),
        "an org's events go with it"
    );
    assert!(
        s.get_event("w4").await.is_ok(),
        "the event without an org stays"
    );
}

/// Gateways reload their snapshot only when this version moved: every change to orgs, keys,
/// flags and limits must move it, and the busy write paths (events, heartbeats) must not.
async fn config_version_moves_with_every_change_gateways_load(s: Store) {
    let mut last = s.config_version().await.unwrap();
    let mut moved = |what: &'static str, now: i64| {
        assert!(now != last, "{what} must move the config version");
        last = now;
    };
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    moved("creating an org", s.config_version().await.unwrap());
    let (key, _) = s.create_key(org.id, KeyKind::App, "k", None).await.unwrap();
    moved("creating a key", s.config_version().await.unwrap());
    s.revoke_key(key.id).await.unwrap();
    moved("revoking a key", s.config_version().await.unwrap());
    s.set_feature(org.id, Feature::Streaming, false)
        .await
        .unwrap();
    moved("switching a feature off", s.config_version().await.unwrap());
    let spec = LimitSpec {
        limit_type: LimitType::DailyRequests,
        value: 5,
        alert_threshold: 80,
        enabled: true,
    };
    s.set_limit(org.id, &spec).await.unwrap();
    moved("setting a limit", s.config_version().await.unwrap());
    s.remove_limit(org.id, LimitType::DailyRequests)
        .await
        .unwrap();
    moved("removing a limit", s.config_version().await.unwrap());
    s.rename_org(org.id, "acme2").await.unwrap();
    moved("renaming an org", s.config_version().await.unwrap());

    let before = s.config_version().await.unwrap();
    s.insert_events(&[event("cv-1", Some(org.id), Utc::now(), "gemini-2.5-flash")])
        .await
        .unwrap();
    s.heartbeat("gw-1", "0.1.0", false, None).await.unwrap();
    s.audit("tester", "noop", Some(org.id), "", "")
        .await
        .unwrap();
    assert_eq!(
        s.config_version().await.unwrap(),
        before,
        "usage events, heartbeats and the audit log leave the version alone"
    );

    s.delete_key(key.id).await.unwrap();
    moved("deleting a key", s.config_version().await.unwrap());
    s.delete_org(org.id).await.unwrap();
    moved("deleting an org", s.config_version().await.unwrap());
}

async fn resource_owners_first_claim_wins_and_loads_incrementally(s: Store) {
    let a = s.create_org("owner-a", &[]).await.unwrap().id;
    let b = s.create_org("owner-b", &[]).await.unwrap().id;
    s.claim_resources(&[("files/f1".into(), a), ("operations/op1".into(), a)])
        .await
        .unwrap();
    // b claims a's file (a replay, or a response that echoes it) and a new cache: a keeps the file.
    s.claim_resources(&[("files/f1".into(), b), ("cachedContents/c1".into(), b)])
        .await
        .unwrap();
    assert_eq!(s.resource_owner("files/f1").await.unwrap(), Some(a));
    assert_eq!(
        s.resource_owner("cachedContents/c1").await.unwrap(),
        Some(b)
    );
    assert_eq!(s.resource_owner("files/nope").await.unwrap(), None);
    let all = s.resource_owners_after(0, 100).await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|r| (r.resource.as_str(), r.org_id))
        .collect();
    assert_eq!(
        names,
        [
            ("files/f1", a),
            ("operations/op1", a),
            ("cachedContents/c1", b)
        ]
    );
    // Incremental: only rows after the last one seen, in pages.
    let page = s.resource_owners_after(all[0].id, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].resource, "operations/op1");
    assert!(s
        .resource_owners_after(all[2].id, 100)
        .await
        .unwrap()
        .is_empty());
    // Google created files/f1 anew for b (a deleted name chosen again): b owns it, in a new row
    // that gateways loading after the last id see; a release frees a name, only its owner's.
    s.record_resource_changes(&[
        ResourceChange::TakeOver("files/f1".into(), b),
        ResourceChange::Release("operations/op1".into(), b),
    ])
    .await
    .unwrap();
    assert_eq!(s.resource_owner("files/f1").await.unwrap(), Some(b));
    let newer = s.resource_owners_after(all[2].id, 100).await.unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(
        (newer[0].resource.as_str(), newer[0].org_id),
        ("files/f1", b)
    );
    assert_eq!(s.resource_owner("operations/op1").await.unwrap(), Some(a));
    s.record_resource_changes(&[ResourceChange::Release("operations/op1".into(), a)])
        .await
        .unwrap();
    assert_eq!(s.resource_owner("operations/op1").await.unwrap(), None);
    // Retention: only the collection named, only rows recorded before the cut-off.
    assert_eq!(
        s.prune_resource_owners("files", Utc::now() - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune_resource_owners("files", Utc::now() + Duration::seconds(5))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.resource_owner("files/f1").await.unwrap(), None);
    assert_eq!(
        s.resource_owner("cachedContents/c1").await.unwrap(),
        Some(b)
    );
    let loaded = s.resource_owners_after(0, 100).await.unwrap();
    assert!(loaded
        .iter()
        .all(|r| r.created_at <= Utc::now() && r.created_at > Utc::now() - Duration::minutes(5)));
    // Deleting an org deletes what it owned.
    s.delete_org(b).await.unwrap();
    assert_eq!(s.resource_owner("cachedContents/c1").await.unwrap(), None);
}

async fn table_stats_and_pruning_in_batches(s: Store) {
    let org = s.create_org("acme", Feature::ALL).await.unwrap();
    assert_eq!(s.oldest_event().await.unwrap(), None);
    let now = Utc::now();
    let batch: Vec<UsageEvent> = (0..25)
        .map(|i| {
            let at = now - Duration::days(if i < 15 { 100 } else { 1 }) - Duration::seconds(i);
            event(&format!("p{i}"), Some(org.id), at, "gemini-2.5-flash")
        })
        .collect();
    let (_, r) = s.write_events(batch).await;
    r.unwrap();
    let oldest = s.oldest_event().await.unwrap().unwrap();
    assert!(oldest < now - Duration::days(99));
    let stats = s.table_stats().await.unwrap();
    for t in ["usage_events", "organizations", "usage_rollups_daily"] {
        assert!(stats.iter().any(|x| x.table == t), "{t} in {stats:?}");
    }
    assert!(stats.iter().all(|x| !x.table.starts_with("_sqlx")));
    // Windows of 10 in the order stored: 10 deleted, then 5 of the next 10, then none.
    let cutoff = now - Duration::days(90);
    let first = s.prune_events_step(cutoff, 0, 10).await.unwrap();
    assert_eq!((first.seen, first.deleted), (10, 10));
    let second = s
        .prune_events_step(cutoff, first.last_id, 10)
        .await
        .unwrap();
    assert_eq!((second.seen, second.deleted), (10, 5));
    let third = s
        .prune_events_step(cutoff, second.last_id, 10)
        .await
        .unwrap();
    assert_eq!((third.seen, third.deleted), (5, 0));
    let end = s
        .prune_events_step(cutoff, third.last_id, 10)
        .await
        .unwrap();
    assert_eq!((end.seen, end.deleted, end.last_id), (0, 0, third.last_id));
    assert_eq!(s.count_events(org.id).await.unwrap(), 10);
    assert!(s.oldest_event().await.unwrap().unwrap() > cutoff);
    // A window deletes only what is past retention, whatever its neighbours.
    let late = event(
        "late",
        Some(org.id),
        now - Duration::days(200),
        "gemini-2.5-flash",
    );
    let (_, r) = s.write_events(vec![late]).await;
    r.unwrap();
    let again = s.prune_events_step(cutoff, 0, 100).await.unwrap();
    assert_eq!((again.seen, again.deleted), (11, 1));
    assert_eq!(s.count_events(org.id).await.unwrap(), 10);
}
