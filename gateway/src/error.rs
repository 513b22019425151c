//! Errors the gateway answers itself, in Google's error format so the SDKs raise their usual
//! exceptions: `{"error":{"code":401,"message":"…","status":"UNAUTHENTICATED"}}`.
//! Messages never carry a key, a prompt or internal detail.

use bytes::Bytes;

/// Every response the gateway makes up instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No gateway key anywhere the SDKs put one.
    #[error("missing API key: send a Tollgate key (tg_…) in x-goog-api-key, ?key= or Authorization: Bearer")]
    MissingKey,
    /// Two places of the request name different keys.
    #[error("the request carries more than one API key and they differ (x-goog-api-key, ?key=, Authorization: Bearer): send one")]
    ConflictingKeys,
    /// A key that is not ours or not known.
    #[error("API key not valid. Please pass a valid Tollgate API key.")]
    UnknownKey,
    /// A key that was revoked.
    #[error("API key revoked. Please ask your administrator for a new Tollgate API key.")]
    RevokedKey,
    /// `x-tollgate-org` without a service key.
    #[error("x-tollgate-org may only be sent with a service key")]
    OrgHeaderNotAllowed,
    /// `x-tollgate-org` names an organization this service key may not act for.
    #[error("this service key may not act for organization {0:?} (x-tollgate-org); its administrator can create one that may")]
    OrgNotAllowed(String),
    /// `x-tollgate-org` names no organization.
    #[error("unknown organization {0:?} in x-tollgate-org")]
    UnknownOrg(String),
    /// A feature flag of the org is off.
    #[error("the {feature} feature is not enabled for this organization")]
    FeatureDisabled {
        /// The flag that is off.
        feature: &'static str,
    },
    /// The request names a resource (file, cached content, batch, operation…) the org does not
    /// own: another org's, or one not created through the gateway. Existence is not revealed.
    #[error("You do not have permission to access {0} or it may not exist.")]
    NotOwned(String),
    /// Keys have never been loaded (store unreachable at start-up, no saved copy).
    #[error("Tollgate is starting and cannot check API keys yet; retry shortly")]
    NotReady,
    /// An enabled usage limit is reached.
    #[error("{}", .0.message())]
    LimitExceeded(crate::limits::Refusal),
    /// A compressed request body: the gateway must read bodies as they pass (references to
    /// owned resources, usage), so it accepts only uncompressed ones, as Google's SDKs send.
    #[error("compressed request bodies (Content-Encoding: {0}) are not accepted: send the body uncompressed")]
    EncodedBody(String),
    /// A request the gateway does not forward (its checks could be bypassed, or its usage not
    /// metered); the message says which and why.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The org has as many resumable uploads in progress as it may.
    #[error("this organization has {max} uploads in progress: finish or cancel one first")]
    TooManyUploads {
        /// The most an org may have.
        max: usize,
    },
    /// The request line and headers are larger, or more, than the gateway accepts.
    #[error("request headers too large: at most {max} {what} (gateway.max_header_bytes, gateway.max_headers)")]
    HeadersTooLarge {
        /// `bytes` or `headers`.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// The request body is larger than the gateway accepts.
    #[error("request body too large: at most {max} bytes (gateway.max_body_bytes); send large files with the Files API's resumable upload")]
    BodyTooLarge {
        /// The bound.
        max: u64,
    },
    /// A chunked request body longer than the gateway can hold to check before forwarding.
    #[error("a request body sent in chunks (Transfer-Encoding: chunked) may be at most {max} bytes: send a larger one with its Content-Length")]
    ChunkedTooLarge {
        /// The bound.
        max: usize,
    },
    /// `models/{m}:{method}` with a method the gateway does not know, so cannot meter.
    #[error("unknown method {0:?} on a model: Tollgate forwards only the methods it knows how to meter (the operator may allow others with gateway.allow_unknown_operations)")]
    UnknownMethod(String),
    /// The request body could not be read.
    #[error("the request body could not be read")]
    BadBody,
    /// The path is not a Google API path we route.
    #[error("no route for {0}: Tollgate serves the Gemini API (/v1beta/…, /v1/…) and Vertex AI (/v1/projects/…, /v1beta1/…) paths")]
    NoRoute(String),
    /// No credential is configured for the provider.
    #[error("Tollgate has no credential for the {provider} provider; the operator must set {env}")]
    NoCredential {
        /// `gemini` or `vertex`.
        provider: &'static str,
        /// The variable to set.
        env: String,
    },
    /// The upstream could not be reached.
    #[error("the upstream {provider} API could not be reached")]
    UpstreamUnreachable {
        /// `gemini` or `vertex`.
        provider: &'static str,
    },
    /// The upstream did not answer in time.
    #[error("the upstream {provider} API did not answer in time")]
    UpstreamTimeout {
        /// `gemini` or `vertex`.
        provider: &'static str,
    },
    /// Anything else that went wrong inside the gateway.
    #[error("internal error in the gateway")]
    Internal,
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::MissingKey | GatewayError::UnknownKey | GatewayError::RevokedKey => 401,
            GatewayError::OrgHeaderNotAllowed
            | GatewayError::OrgNotAllowed(_)
            | GatewayError::FeatureDisabled { .. }
            | GatewayError::NotOwned(_) => 403,
            GatewayError::UnknownOrg(_)
            | GatewayError::ConflictingKeys
            | GatewayError::BadBody
            | GatewayError::EncodedBody(_)
            | GatewayError::UnknownMethod(_)
            | GatewayError::Unsupported(_) => 400,
            GatewayError::BodyTooLarge { .. } | GatewayError::ChunkedTooLarge { .. } => 413,
            GatewayError::HeadersTooLarge { .. } => 431,
            GatewayError::LimitExceeded(_) | GatewayError::TooManyUploads { .. } => 429,
            GatewayError::NoRoute(_) => 404,
            GatewayError::NoCredential { .. } | GatewayError::NotReady => 503,
            GatewayError::UpstreamUnreachable { .. } => 502,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::Internal => 500,
        }
    }

    /// Google's status string for the code.
    pub fn google_status(&self) -> &'static str {
        match self.status() {
            400 | 413 | 431 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            502 | 503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        }
    }

    /// A short static name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::MissingKey => "missing_key",
            GatewayError::ConflictingKeys => "conflicting_keys",
            GatewayError::UnknownKey => "unknown_key",
            GatewayError::RevokedKey => "revoked_key",
            GatewayError::OrgHeaderNotAllowed => "org_header_not_allowed",
            GatewayError::UnknownOrg(_) => "unknown_org",
            GatewayError::OrgNotAllowed(_) => "org_not_allowed",
            GatewayError::LimitExceeded(_) => "limit_exceeded",
            GatewayError::TooManyUploads { .. } => "too_many_uploads",
            GatewayError::NotReady => "not_ready",
            GatewayError::BadBody => "bad_body",
            GatewayError::HeadersTooLarge { .. } => "headers_too_large",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::ChunkedTooLarge { .. } => "chunked_too_large",
            GatewayError::UnknownMethod(_) => "unknown_method",
            GatewayError::EncodedBody(_) => "encoded_body",
            GatewayError::Unsupported(_) => "unsupported",
            GatewayError::FeatureDisabled { .. } => "feature_disabled",
            GatewayError::NotOwned(_) => "not_owned",
            GatewayError::NoRoute(_) => "no_route",
            GatewayError::NoCredential { .. } => "no_credential",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::Internal => "internal",
        }
    }

    /// Extra response headers (the `Retry-After` and `x-ratelimit-*` of a limit refusal).
    pub fn headers(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<(&'static str, String)> {
        match self {
            GatewayError::LimitExceeded(r) => r.headers(now),
            _ => Vec::new(),
        }
    }

    /// The JSON body, as Google writes it.
    pub fn body(&self) -> Bytes {
        google_error_body(self.status(), &self.to_string(), self.google_status())
    }
}

/// Builds `{"error":{"code":…,"message":…,"status":…}}`.
pub fn google_error_body(code: u16, message: &str, status: &str) -> Bytes {
    let v = serde_json::json!({ "error": { "code": code, "message": message, "status": status } });
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_googles_format() {
        let e = GatewayError::FeatureDisabled {
            feature: "video_generation",
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], 403);
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("video_generation"));
        assert_eq!(
            GatewayError::UpstreamTimeout { provider: "gemini" }.google_status(),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(GatewayError::UnknownKey.status(), 401);
    }
}
