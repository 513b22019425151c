//! The data model's public types: rows as the store returns them, and the closed vocabularies
//! (roles, key kinds, features, limit types) with their canonical spellings.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Declares a closed vocabulary stored as text: parsing, display, serde and the list of values.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical spelling, as stored and as typed on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StoreError::Validation(format!(
                        "unknown {} {:?}; expected one of: {}",
                        stringify!($name).to_lowercase(),
                        s,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

text_enum! {
    /// A member's role in an organization.
    Role { Owner = "owner", Admin = "admin", Member = "member" }
}

text_enum! {
    /// What a gateway key may do. A service key may name the org per request.
    KeyKind { App = "app", Service = "service" }
}

text_enum! {
    /// The per-org feature flags; each gates a set of gateway operations.
    Feature {
        TextGeneration = "text_generation",
        Streaming = "streaming",
        ImageGeneration = "image_generation",
        VideoGeneration = "video_generation",
        Embeddings = "embeddings",
        TokenCounting = "token_counting",
        FileUploads = "file_uploads",
        ContextCaching = "context_caching",
        BatchJobs = "batch_jobs",
        VertexAi = "vertex_ai",
        ProModels = "pro_models",
    }
}

text_enum! {
    /// The kinds of usage limit.
    LimitType {
        /// All tokens in the calendar month (UTC).
        MonthlyTokens = "monthly_tokens",
        /// Cost in micro-dollars in the calendar month (UTC).
        MonthlyCost = "monthly_cost",
        /// Images and videos generated in the UTC day.
        DailyAds = "daily_ads",
        /// Forwarded requests in the UTC day.
        DailyRequests = "daily_requests",
    }
}

/// Decodes a text column into one of the vocabularies above.
macro_rules! decode_text_enum {
    ($($name:ident),+) => {$(
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name where String: sqlx::Type<DB> {
            fn type_info() -> DB::TypeInfo { <String as sqlx::Type<DB>>::type_info() }
            fn compatible(ty: &DB::TypeInfo) -> bool { <String as sqlx::Type<DB>>::compatible(ty) }
        }
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name where &'r str: sqlx::Decode<'r, DB> {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<DB>>::decode(value)?;
                Ok(s.parse::<$name>()?)
            }
        }
    )+};
}
decode_text_enum!(Role, KeyKind, Feature, LimitType);

/// An organization: the tenant whose usage is metered and limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Org {
    /// Stable numeric id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A person who can log in to the admin service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    /// Stable numeric id.
    pub id: i64,
    /// Unique login email.
    pub email: String,
    /// Superusers see and manage every organization.
    pub is_superuser: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A user's role in an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Membership {
    /// The organization.
    pub org_id: i64,
    /// The user.
    pub user_id: i64,
    /// The user's email (joined in for display).
    pub email: String,
    /// Owner, admin or member.
    pub role: Role,
    /// When the membership was created.
    pub created_at: DateTime<Utc>,
}

/// A gateway key as stored: never the key itself, only its SHA-256 and a display prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApiKey {
    /// Stable numeric id.
    pub id: i64,
    /// The organization it belongs to.
    pub org_id: i64,
    /// The user it belongs to, if any (for attribution).
    pub user_id: Option<i64>,
    /// App or service.
    pub kind: KeyKind,
    /// A human label.
    pub name: String,
    /// The first characters of the key, safe to display (`tg_AbCd…`).
    pub prefix: String,
    /// The organizations a service key may name: `''` its own, `'*'` any, else ids (see
    /// [`ActsFor`]).
    pub acts_for: String,
    /// Hex SHA-256 of the whole key.
    #[serde(skip_serializing)]
    pub key_hash: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked key is refused by the gateway.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// True until the key is revoked.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// The organizations a service key may name with `x-tollgate-org`, besides its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ActsFor {
    /// Its own organization only.
    #[default]
    Own,
    /// These organizations too.
    Orgs(Vec<i64>),
    /// Any organization.
    Any,
}

impl ActsFor {
    /// As stored in `api_keys.acts_for`.
    pub fn to_db(&self) -> String {
        match self {
            ActsFor::Own => String::new(),
            ActsFor::Any => "*".into(),
            ActsFor::Orgs(ids) => ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
        }
    }

    /// From `api_keys.acts_for`; anything unreadable is the narrowest scope.
    pub fn from_db(s: &str) -> ActsFor {
        match s.trim() {
            "" => ActsFor::Own,
            "*" => ActsFor::Any,
            list => {
                let ids: Option<Vec<i64>> =
                    list.split(',').map(|p| p.trim().parse().ok()).collect();
                ids.map_or(ActsFor::Own, ActsFor::Orgs)
            }
        }
    }

    /// Whether a key of `own` may act for `org`.
    pub fn allows(&self, own: i64, org: i64) -> bool {
        org == own
            || match self {
                ActsFor::Own => false,
                ActsFor::Any => true,
                ActsFor::Orgs(ids) => ids.contains(&org),
            }
    }
}

/// One feature flag of one organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct FeatureFlag {
    /// The organization.
    pub org_id: i64,
    /// Which feature.
    pub feature: Feature,
    /// On or off.
    pub enabled: bool,
}

/// A usage limit of one organization (at most one per limit type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageLimit {
    /// Stable numeric id.
    pub id: i64,
    /// The organization.
    pub org_id: i64,
    /// Which kind of limit.
    pub limit_type: LimitType,
    /// The limit: tokens, micro-dollars, images+videos or requests, per period.
    pub value: i64,
    /// Percent of the value at which an alert fires (1–100, default 80).
    pub alert_threshold: i32,
    /// A disabled limit refuses nothing.
    pub enabled: bool,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What to set on a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSpec {
    /// Which kind of limit.
    pub limit_type: LimitType,
    /// Tokens, micro-dollars, images+videos or requests per period; not negative.
    pub value: i64,
    /// Percent (1–100); defaults to 80.
    pub alert_threshold: i32,
    /// Whether the limit refuses requests.
    pub enabled: bool,
}

impl LimitSpec {
    /// Checks the ranges the schema also enforces, with a message a person can act on.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.value < 0 {
            return Err(StoreError::Validation(format!(
                "limit value must be 0 or more, got {}",
                self.value
            )));
        }
        if !(1..=100).contains(&self.alert_threshold) {
            return Err(StoreError::Validation(format!(
                "alert threshold must be a percent between 1 and 100, got {}",
                self.alert_threshold
            )));
        }
        Ok(())
    }
}

/// One metered request: what the ledger writes and the dashboard reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageEvent {
    /// The gateway's own id, unique per request; inserting the same id twice stores one event.
    pub request_id: String,
    /// The `x-request-id` the client sent, if any (clients may reuse theirs, so it is not a key).
    pub client_request_id: Option<String>,
    /// When the request arrived.
    pub occurred_at: DateTime<Utc>,
    /// The organization, when it was identified.
    pub org_id: Option<i64>,
    /// The gateway key used, when identified.
    pub key_id: Option<i64>,
    /// The end user named by `x-tollgate-user` or the key.
    pub user_ref: Option<String>,
    /// The tool named by `x-tollgate-tool`.
    pub tool: Option<String>,
    /// `gemini` or `vertex`.
    pub provider: String,
    /// The model as requested.
    pub model: String,
    /// The operation (`generateContent`, `predict`, …).
    pub operation: String,
    /// The HTTP status returned to the client.
    pub status: i32,
    /// Whether the response was a stream.
    pub streamed: bool,
    /// Forwarded and of a kind that counts toward usage and limits; only these enter rollups.
    pub metered: bool,
    /// Prompt tokens (including cached).
    pub input_tokens: i64,
    /// Candidate (visible output) tokens.
    pub output_tokens: i64,
    /// Thinking tokens (billed as output).
    pub thinking_tokens: i64,
    /// Cached prompt tokens (a subset of input).
    pub cached_tokens: i64,
    /// Tool-use prompt tokens.
    pub tool_prompt_tokens: i64,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Audio prompt tokens (a subset of input).
    pub input_audio_tokens: i64,
    /// Image output tokens (a subset of output).
    pub output_image_tokens: i64,
    /// Images generated.
    pub images: i64,
    /// Videos generated.
    pub videos: i64,
    /// Seconds of video generated.
    pub video_seconds: i64,
    /// Price in micro-dollars.
    pub cost_micros: i64,
    /// True when counts were estimated (no usage block arrived).
    pub estimated: bool,
    /// False when the model had no known price and a fallback was used.
    pub priced: bool,
    /// Time spent waiting for the upstream, when it was reached.
    pub upstream_latency_ms: Option<i64>,
    /// Time from request to the end of the response.
    pub total_latency_ms: i64,
}

/// Usage totals over a range, for one group (a model, an operation, or everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageTotals {
    /// The group's name (model, operation, …), empty for the grand total.
    pub group_key: String,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Thinking tokens.
    pub thinking_tokens: i64,
    /// Cached tokens.
    pub cached_tokens: i64,
    /// All tokens.
    pub total_tokens: i64,
    /// Images generated.
    pub images: i64,
    /// Videos generated.
    pub videos: i64,
    /// Video seconds generated.
    pub video_seconds: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
}

/// A day's usage of one org for one provider, model and tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DailyRollup {
    /// The UTC day.
    pub day: NaiveDate,
    /// The organization.
    pub org_id: i64,
    /// `gemini` or `vertex`.
    pub provider: String,
    /// The model.
    pub model: String,
    /// The tool, empty when none was named.
    pub tool: String,
    /// The user, empty when none was named.
    pub user_ref: String,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Thinking tokens.
    pub thinking_tokens: i64,
    /// Cached tokens.
    pub cached_tokens: i64,
    /// All tokens.
    pub total_tokens: i64,
    /// Images.
    pub images: i64,
    /// Videos.
    pub videos: i64,
    /// Video seconds.
    pub video_seconds: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
}

/// A limit alert: usage crossed a threshold once in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct LimitAlert {
    /// Stable numeric id.
    pub id: i64,
    /// The organization.
    pub org_id: i64,
    /// Which limit.
    pub limit_type: LimitType,
    /// The period (`2026-11` or `2026-11-28`).
    pub period: String,
    /// The percent crossed (the alert threshold, or 100).
    pub threshold_pct: i32,
    /// The limit's value then.
    pub limit_value: i64,
    /// The usage then.
    pub usage_value: i64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Stable numeric id.
    pub id: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who did it (`cli`, a user's email).
    pub actor: String,
    /// What was done (`org.create`, `key.revoke`, …).
    pub action: String,
    /// The organization concerned, if any.
    pub org_id: Option<i64>,
    /// The object changed (a key id, an email, a limit type).
    pub target: String,
    /// Further detail (JSON text), never a secret.
    pub detail: String,
}

/// A gateway instance's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct GatewayInstance {
    /// Unique per running process.
    pub instance_id: String,
    /// The Tollgate version it runs.
    pub version: String,
    /// True while it enforces limits in fail-open mode.
    pub degraded: bool,
    /// When it last synced counters from the store.
    pub last_sync: Option<DateTime<Utc>>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
}
