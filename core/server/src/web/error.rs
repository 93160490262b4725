//! How the JSON API answers a failed call: the gRPC status as an HTTP
//! status and a JSON body `{code, message}`.

use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failed call, as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// The gRPC status code's name (`not_found`, `permission_denied`...).
    pub code: String,
    /// Why, naming the field or cause.
    pub message: String,
    #[serde(skip)]
    #[schema(ignore)]
    status: http::StatusCode,
}

/// The failures any operation may answer with (documented once).
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub(crate) enum Errors {
    /// The request is malformed: a field, parameter or body is invalid.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// No token, or one that is unknown, revoked or expired.
    #[response(status = 401)]
    Unauthenticated(ApiError),
    /// The token does not grant what the call needs.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// No such app, task, node or plugin (or not in the caller's namespace).
    #[response(status = 404)]
    NotFound(ApiError),
    /// The call conflicts with the state (exists already, not possible now).
    #[response(status = 409)]
    Conflict(ApiError),
    /// This server cannot answer now (no leader, shutting down).
    #[response(status = 503)]
    Unavailable(ApiError),
}

fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as S;
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::OutOfRange => S::BAD_REQUEST,
        C::Unauthenticated => S::UNAUTHORIZED,
        C::PermissionDenied => S::FORBIDDEN,
        C::NotFound => S::NOT_FOUND,
        C::AlreadyExists | C::FailedPrecondition | C::Aborted => S::CONFLICT,
        C::ResourceExhausted => S::TOO_MANY_REQUESTS,
        C::Unimplemented => S::NOT_IMPLEMENTED,
        C::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        C::Unavailable | C::Cancelled => S::SERVICE_UNAVAILABLE,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

fn code_name(code: tonic::Code) -> String {
    let debug = format!("{code:?}");
    let mut out = String::new();
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

impl ApiError {
    /// An error with a gRPC code and a message.
    pub fn new(code: tonic::Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code_name(code),
            message: message.into(),
            status: http_status(code),
        }
    }

    /// A 400 naming a bad parameter or body.
    pub fn bad(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(tonic::Code::InvalidArgument, message.to_string())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(st: tonic::Status) -> ApiError {
        ApiError::new(st.code(), st.message())
    }
}

impl From<&tonic::Status> for ApiError {
    fn from(st: &tonic::Status) -> ApiError {
        ApiError::new(st.code(), st.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(&self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http() {
        let e = ApiError::from(tonic::Status::permission_denied("no"));
        assert_eq!(
            (e.code.as_str(), e.status.as_u16()),
            ("permission_denied", 403)
        );
        let e = ApiError::new(tonic::Code::InvalidArgument, "x");
        assert_eq!(
            (e.code.as_str(), e.status.as_u16()),
            ("invalid_argument", 400)
        );
        assert_eq!(http_status(tonic::Code::Unavailable), 503);
    }
}
