//! Input extractors that answer bad input with the API's 400 body (axum's own rejections are
//! plain text with assorted statuses): JSON bodies (content type, 64 KiB, unknown fields, the
//! field at fault) and query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::ops::OpsError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body: `application/json`, at most 64 KiB, every field known.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(OpsError::invalid(
                "",
                "the body must be JSON (content-type: application/json)",
            )
            .into());
        }
        let req =
            req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, MAX_BODY_BYTES)));
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError(OpsError::invalid(
                "",
                format!(
                    "the body must be at most {} KiB of JSON",
                    MAX_BODY_BYTES / 1024
                ),
            ))
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." { String::new() } else { field };
                ApiError(OpsError::invalid(&field, e.inner().to_string()))
            })
    }
}

/// A query string, every parameter known.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." { String::new() } else { field };
                ApiError(OpsError::invalid(&field, e.inner().to_string()))
            })
    }
}
