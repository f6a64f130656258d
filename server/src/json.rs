//! `Json<T>`: the request body as JSON, refused with an `AppError` (and so the shared
//! error body) that names the field and the problem, never the value that was sent. An
//! object that names a key twice is refused (serde_json alone would keep the last).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// A JSON request body. As a response it is `axum::Json`; this type is for input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AppError::PayloadTooLarge
            }
            other => AppError::MalformedJson(format!("the body could not be read ({})", other.body_text())),
        })?;
        parse(&bytes).map(Json)
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5 && essence.get(essence.len() - 5..).is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Parses a JSON body into `T`, with errors fit to show the client.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = format!("line {} column {}", inner.line(), inner.column());
        match inner.classify() {
            serde_json::error::Category::Data => {
                let problem = redact(&inner.to_string());
                if path == "." {
                    AppError::InvalidBody(problem)
                } else {
                    AppError::InvalidBody(format!("`{path}`: {problem}"))
                }
            }
            serde_json::error::Category::Eof => AppError::MalformedJson(format!("it ends too early ({at})")),
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                AppError::MalformedJson(format!("syntax error at {at}"))
            }
        }
    })?;
    de.end().map_err(|e| {
        AppError::MalformedJson(format!("trailing characters at line {} column {}", e.line(), e.column()))
    })?;
    // Checked after the body has read as `T`, so syntax errors keep their positions.
    episode::json::check_unique_keys(bytes).map_err(AppError::InvalidBody)?;
    Ok(value)
}

/// Keeps what serde expected and drops what it found, which may be a patient's
/// identifier or a password: `invalid type: string "…", expected u32` becomes
/// `wrong type, expected u32`. Field names (`missing field `x``) stay.
fn redact(message: &str) -> String {
    // serde_json appends the position; the path already says where.
    let message = match message.rfind(" at line ") {
        Some(end) => &message[..end],
        None => message,
    };
    // Our own checks (`TryFrom` on the names in `accounts`) say `must …` and never quote
    // the value.
    if message.starts_with("missing field `") || message.starts_with("unknown field `") || message.starts_with("must ")
    {
        return message.to_string();
    }
    let expected = message.rfind(", expected ").map(|i| &message[i + 2..]);
    let kind = if message.starts_with("invalid type") {
        "wrong type"
    } else if message.starts_with("invalid length") {
        "wrong length"
    } else if message.starts_with("unknown variant") {
        "unknown value"
    } else {
        "invalid value"
    };
    match expected {
        Some(expected) => format!("{kind}, {expected}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redaction_drops_values_and_keeps_expectations() {
        assert_eq!(
            redact("invalid type: string \"NHS 943\", expected u32 at line 1 column 9"),
            "wrong type, expected u32"
        );
        assert_eq!(redact("missing field `username` at line 1 column 2"), "missing field `username`");
        assert_eq!(redact("unknown variant `x`, expected `a` or `b`"), "unknown value, expected `a` or `b`");
        assert_eq!(redact("something odd: 12345"), "invalid value");
    }
}
