//! Sending one alert: a webhook POST signed with HMAC-SHA256, or an email over SMTP.
//! Both are blocking (the outbox's worker runs them on tokio's blocking pool) and both
//! say whether a failure is worth retrying.
//!
//! Delivery is at least once: a server killed after the receiver took an alert but before
//! the outbox marked it sent sends it again after restart. So every alert carries its key,
//! `<action id>:<moment>`, as the webhook's `Idempotency-Key` header and in the email's
//! `Message-ID`, and a receiver that keeps the keys it has seen takes each alert once.

use std::time::Duration;

use lettre::Transport as _;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};

use std::sync::Arc;

use super::config::{Alerts, Security, Smtp, Webhook, Whom};
use super::message::Alert;
use super::{KIND_EMAIL, KIND_WEBHOOK};
use crate::auth::token::{hmac, to_hex};
use crate::outbox::{SendError, Sender, Sent};
use crate::store::OutboxItem;

/// The header that carries the body's signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Tether-Signature";
/// The header that carries the alert's key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// How long one delivery may take before it counts as failed (and is retried).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Sends the outbox's alerts of one kind (`alert_webhook` or `alert_email`) to the
/// contact each names, as the alerts file now says (a secret rotated since the alert was
/// raised is the one used).
pub struct AlertSender {
    kind: &'static str,
    alerts: Arc<Alerts>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for AlertSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSender").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl AlertSender {
    /// The two senders, for the outbox's worker.
    pub fn both(alerts: &Arc<Alerts>) -> Vec<Arc<dyn Sender>> {
        [KIND_WEBHOOK, KIND_EMAIL]
            .into_iter()
            .map(|kind| Arc::new(Self { kind, alerts: Arc::clone(alerts), agent: agent() }) as Arc<dyn Sender>)
            .collect()
    }

    fn send_one(&self, item: &OutboxItem) -> Result<(), SendError> {
        let alert: Alert = serde_json::from_str(&item.payload)
            .map_err(|_| SendError::permanent("the alert in the outbox is not one this server reads"))?;
        let contact = self
            .alerts
            .teams
            .get(&alert.team)
            .and_then(|team| team.by_whom(&Whom::parse(&alert.contact)))
            .ok_or_else(|| {
                SendError::transient(format!("the alerts file names no {} contact for {}", alert.contact, alert.team))
            })?;
        match self.kind {
            KIND_WEBHOOK => match &contact.webhook {
                Some(hook) => webhook(&self.agent, hook, &alert),
                None => Err(SendError::transient(format!("the {} contact has no webhook now", alert.contact))),
            },
            _ => match (&contact.email, &self.alerts.smtp) {
                (Some(to), Some(smtp)) => email(smtp, to, &alert),
                _ => Err(SendError::transient(format!("the {} contact has no email now", alert.contact))),
            },
        }
    }
}

impl Sender for AlertSender {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn send(&self, items: &[OutboxItem]) -> Result<Sent, SendError> {
        for item in items {
            self.send_one(item)?;
        }
        Ok(Sent(serde_json::Value::Null))
    }
}

/// The signature header's value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", to_hex(&hmac(secret, body)))
}

/// POSTs the alert as JSON to the webhook.
pub fn webhook(agent: &ureq::Agent, hook: &Webhook, alert: &Alert) -> Result<(), SendError> {
    let body = alert.to_json();
    let answer = agent
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header(SIGNATURE_HEADER, signature(hook.secret.expose().as_bytes(), body.as_bytes()))
        .header(IDEMPOTENCY_HEADER, &alert.key)
        .send(body.as_bytes());
    match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Ok(()),
                408 | 429 | 500..=599 => Err(SendError::transient(format!("the webhook answered {status}"))),
                _ => Err(SendError::permanent(format!("the webhook answered {status}"))),
            }
        }
        Err(error) => Err(SendError::transient(format!("the webhook could not be reached: {error}"))),
    }
}

/// The HTTP client for webhooks: no redirects (an answer from elsewhere proves nothing),
/// a timeout, statuses as answers rather than errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .user_agent("tether-alerts")
        .build()
        .into()
}

/// Emails the alert to `to` through the relay.
pub fn email(smtp: &Smtp, to: &lettre::Address, alert: &Alert) -> Result<(), SendError> {
    let domain = smtp.from.email.domain().to_owned();
    let message = lettre::Message::builder()
        .from(smtp.from.clone())
        .to(lettre::message::Mailbox::new(None, to.clone()))
        .subject(alert.subject())
        // The alert's key in the Message-ID: a second copy after a crash is recognisable.
        .message_id(Some(format!("<{}@{domain}>", alert.key)))
        .header(ContentType::TEXT_PLAIN)
        .body(alert.text())
        .map_err(|e| SendError::permanent(format!("the email could not be made: {e}")))?;
    let tls = |host: &str| {
        TlsParameters::new(host.to_owned()).map_err(|e| SendError::permanent(format!("SMTP TLS settings: {e}")))
    };
    let builder = lettre::SmtpTransport::builder_dangerous(&smtp.host).port(smtp.port).timeout(Some(TIMEOUT));
    let builder = match smtp.security {
        Security::None => builder.tls(Tls::None),
        Security::StartTls => builder.tls(Tls::Required(tls(&smtp.host)?)),
        Security::Tls => builder.tls(Tls::Wrapper(tls(&smtp.host)?)),
    };
    let builder = match &smtp.credentials {
        Some((user, password)) => builder.credentials(Credentials::new(user.clone(), password.expose().to_owned())),
        None => builder,
    };
    match builder.build().send(&message) {
        Ok(_) => Ok(()),
        // The relay's own words are not kept: they may echo the message back.
        Err(error) => {
            let code = error.status().map_or_else(|| "no answer".to_owned(), |code| format!("SMTP {code}"));
            if error.is_permanent() {
                Err(SendError::permanent(format!("the relay refused the email ({code})")))
            } else {
                Err(SendError::transient(format!("the email was not sent ({code})")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
