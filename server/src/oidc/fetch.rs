//! HTTP to a provider: discovery, its keys, the token endpoint and userinfo, over ureq
//! with rustls (ring), blocking (callers are on tokio's blocking pool). Redirects are not
//! followed (an answer from elsewhere could be plain HTTP), answers are read up to
//! [`MAX_ANSWER_BYTES`], and every call gives up after [`TIMEOUT`].

use std::time::Duration;

use super::config::transport_allowed;

/// The most of an answer that is read: discovery documents, key sets and token
/// responses are a few kilobytes.
pub const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// How long one call to a provider may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Why a call to a provider brought no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is neither https:// nor a loopback address")]
    Insecure(String),
    #[error("{url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The HTTP client shared by every provider.
#[derive(Debug, Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Default for Http {
    fn default() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(TIMEOUT))
            .user_agent("tether")
            .build()
            .into();
        Self { agent }
    }
}

impl Http {
    /// `GET url`, with a bearer token if given.
    pub fn get(&self, url: &str, bearer: Option<&str>) -> Result<Answer, FetchError> {
        check(url)?;
        let mut request = self.agent.get(url).header("Accept", "application/json");
        if let Some(token) = bearer {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        read(url, request.call())
    }

    /// `POST url` with a form body, and an `Authorization` header if given.
    pub fn post_form(
        &self,
        url: &str,
        form: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Answer, FetchError> {
        check(url)?;
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        let mut request =
            self.agent.post(url).header("Accept", "application/json").content_type("application/x-www-form-urlencoded");
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        read(url, request.send(body.finish()))
    }
}

fn check(url: &str) -> Result<(), FetchError> {
    if transport_allowed(url) { Ok(()) } else { Err(FetchError::Insecure(url.to_owned())) }
}

fn read(url: &str, sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, FetchError> {
    let unreachable = |reason: String| FetchError::Unreachable { url: url.to_owned(), reason };
    let mut response = sent.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(Answer { status, body })
}
