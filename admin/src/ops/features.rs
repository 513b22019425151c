//! Feature flags: the eleven per-org switches, each gating a set of gateway operations.

use serde::Serialize;
use store::{Feature, Store};
use utoipa::ToSchema;

use super::authz::{check, Action};
use super::{visible_org, Actor, OpsError};

/// One flag with its state and what it gates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeatureView {
    /// The flag's name (e.g. `video_generation`).
    pub feature: String,
    /// On or off.
    pub enabled: bool,
    /// What it gates at the gateway.
    pub gates: &'static str,
}

/// What each flag gates, in one line (shown by the API and the console).
pub fn gates(f: Feature) -> &'static str {
    match f {
        Feature::TextGeneration => "generateContent on text models",
        Feature::Streaming => "streamGenerateContent",
        Feature::ImageGeneration => "Imagen predict and image-output Gemini models",
        Feature::VideoGeneration => "Veo predictLongRunning (polling stays allowed)",
        Feature::Embeddings => "embedContent, batchEmbedContents, Vertex embedding predict",
        Feature::TokenCounting => "countTokens and computeTokens",
        Feature::FileUploads => "files and /upload/…",
        Feature::ContextCaching => "cachedContents and requests naming a cachedContent",
        Feature::BatchJobs => "batchGenerateContent, batches and batch prediction jobs",
        Feature::VertexAi => "the whole Vertex AI surface",
        Feature::ProModels => "*-pro* and *-ultra* models (the expensive tier)",
    }
}

/// Parses a flag name.
pub fn feature(raw: &str) -> Result<Feature, OpsError> {
    raw.trim().parse().map_err(|_| {
        OpsError::invalid(
            "feature",
            format!(
                "unknown feature {raw:?}; expected one of: {}",
                Feature::ALL
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn views(flags: Vec<store::FeatureFlag>) -> Vec<FeatureView> {
    flags
        .into_iter()
        .map(|f| FeatureView {
            feature: f.feature.to_string(),
            enabled: f.enabled,
            gates: gates(f.feature),
        })
        .collect()
}

/// The org's eleven flags.
pub async fn list(store: &Store, actor: &Actor, org: &str) -> Result<Vec<FeatureView>, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    Ok(views(store.list_features(org.id).await?))
}

/// Sets one or several flags at once; returns all eleven.
pub async fn set(
    store: &Store,
    actor: &Actor,
    org: &str,
    changes: &[(Feature, bool)],
) -> Result<Vec<FeatureView>, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageFeatures)?;
    if changes.is_empty() {
        return Err(OpsError::invalid("features", "name at least one feature"));
    }
    let detail: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|(f, on)| (f.to_string(), serde_json::Value::Bool(*on)))
        .collect();
    let audit = actor
        .audit("feature.set")
        .target(if changes.len() == 1 {
            changes[0].0.to_string()
        } else {
            format!("{} features", changes.len())
        })
        .detail(serde_json::Value::Object(detail));
    Ok(views(
        store.set_features_audited(org.id, changes, &audit).await?,
    ))
}
