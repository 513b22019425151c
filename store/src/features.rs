//! Per-org feature flags. Every org has a row for each of the eleven features (written when the
//! org is created); a missing row reads as "on" so a feature added later is on until switched off.

use chrono::Utc;

use crate::audit::audit_in;
use crate::{with_pool, Audit, Feature, FeatureFlag, Result, Store};

impl Store {
    /// All eleven flags of an org, in the order of [`Feature::ALL`].
    pub async fn list_features(&self, org_id: i64) -> Result<Vec<FeatureFlag>> {
        self.get_org(org_id).await?;
        let rows: Vec<FeatureFlag> = with_pool!(self, pool => sqlx::query_as::<_, FeatureFlag>(
            "SELECT org_id, feature, enabled FROM feature_flags WHERE org_id = $1")
            .bind(org_id).fetch_all(pool).await)?;
        Ok(Feature::ALL
            .iter()
            .map(|&feature| {
                let enabled = rows
                    .iter()
                    .find(|r| r.feature == feature)
                    .is_none_or(|r| r.enabled);
                FeatureFlag {
                    org_id,
                    feature,
                    enabled,
                }
            })
            .collect())
    }

    /// Switches one flag of an org on or off.
    pub async fn set_feature(
        &self,
        org_id: i64,
        feature: Feature,
        enabled: bool,
    ) -> Result<FeatureFlag> {
        self.get_org(org_id).await?;
        let now = Utc::now();
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO feature_flags (org_id, feature, enabled, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, feature) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at")
            .bind(org_id).bind(feature.as_str()).bind(enabled).bind(now).execute(pool).await.map(drop))?;
        Ok(FeatureFlag {
            org_id,
            feature,
            enabled,
        })
    }

    /// Sets several flags of an org at once (enable all / disable all is one call), with the
    /// audit row, in one transaction; returns all eleven flags after the change.
    pub async fn set_features_audited(
        &self,
        org_id: i64,
        changes: &[(Feature, bool)],
        audit: &Audit,
    ) -> Result<Vec<FeatureFlag>> {
        self.get_org(org_id).await?;
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (feature, enabled) in changes {
                sqlx::query(
                    "INSERT INTO feature_flags (org_id, feature, enabled, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (org_id, feature) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at")
                    .bind(org_id).bind(feature.as_str()).bind(*enabled).bind(now)
                    .execute(&mut *tx).await?;
            }
            audit_in!(tx, Some(audit), Some(org_id), org_id);
            tx.commit().await?;
        });
        self.list_features(org_id).await
    }

    /// Every explicitly stored flag that is off, for the gateway's snapshot.
    pub async fn disabled_features(&self) -> Result<Vec<FeatureFlag>> {
        let rows: Vec<(i64, String)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT org_id, feature FROM feature_flags WHERE enabled = $1")
            .bind(false).fetch_all(pool).await)?;
        // Unknown names (from a newer version sharing the database) are skipped, not fatal.
        Ok(rows
            .into_iter()
            .filter_map(|(org_id, f)| {
                f.parse::<Feature>().ok().map(|feature| FeatureFlag {
                    org_id,
                    feature,
                    enabled: false,
                })
            })
            .collect())
    }
}
