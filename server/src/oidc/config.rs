//! The sign-in settings file (`--oidc-config FILE`, TOML): whether passwords may still be
//! used, the claims mapping's file, and each OpenID provider — its issuer, the client
//! Tether is registered as, how that client proves itself at the token endpoint, the
//! scopes, the assurance it must reach and the redirect URIs registered for it.
//!
//! Everything is checked when the file is read, so that a mistake stops `tether serve`
//! with a message naming the provider and the setting, rather than a sign-in failing
//! later. Secrets come from the environment or a key file, never from this file.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::client_auth::{ClientAuth, PrivateKey};
use super::mapping::Mapping;
use crate::config::Secret;

/// The longest clock leeway a provider may be given: a larger one would keep expired ID
/// tokens alive for longer than a sign-in takes.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// The leeway when none is configured.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// A provider's id, as the settings, the routes (`/dashboard/oidc/{id}/start`) and the
/// usernames of its people (`cis2:…`) name it: 1 to 32 lowercase letters, digits or `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId(String);

impl ProviderId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProviderId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 32
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err("a provider id is 1 to 32 lowercase letters, digits or `-`".into())
        }
    }
}

impl<'de> Deserialize<'de> for ProviderId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Whether local usernames and passwords may sign in.
    #[serde(default = "yes")]
    passwords: bool,
    /// The claims mapping's file, relative to this one.
    mapping: PathBuf,
    #[serde(default, rename = "provider")]
    providers: Vec<ProviderFile>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    id: ProviderId,
    /// As the sign-in button names it: "Sign in with NHS CIS2".
    name: String,
    issuer: String,
    client_id: String,
    /// RFC 7523 `private_key_jwt`: an RSA private key (PEM), relative to this file.
    private_key_file: Option<PathBuf>,
    /// The `kid` the provider knows the key by.
    private_key_id: Option<String>,
    /// RS256 (the default), RS384, RS512, PS256, PS384 or PS512.
    private_key_alg: Option<String>,
    /// The name of the environment variable that holds a client secret.
    client_secret_env: Option<String>,
    /// How the secret is sent: `client_secret_basic` (the default) or `client_secret_post`.
    client_secret_method: Option<String>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    /// Whether to read the userinfo endpoint too (NHS CIS2 gives its RBAC roles there).
    #[serde(default)]
    userinfo: bool,
    /// The provider's `acr` values, weakest first.
    #[serde(default)]
    acr_levels: Vec<String>,
    /// The weakest `acr` accepted; requested with `acr_values`.
    min_acr: Option<String>,
    /// The dashboard's callback, as registered: `https://HOST/dashboard/oidc/callback`.
    redirect_uri: String,
    /// The phone apps' redirect URIs, as registered (RFC 8252: a private-use scheme, a
    /// claimed https link, or a loopback address).
    #[serde(default)]
    phone_redirect_uris: Vec<String>,
    clock_leeway_secs: Option<u64>,
    /// The ID token signature algorithms accepted (asymmetric only).
    id_token_algs: Option<Vec<String>>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

/// The assurance a provider must report: its `acr` values weakest first, and the index
/// of the weakest one accepted.
#[derive(Debug, Clone)]
pub struct AcrPolicy {
    pub levels: Vec<String>,
    pub min: usize,
}

impl AcrPolicy {
    /// The values that meet the minimum, strongest first (for `acr_values`, in order of
    /// preference).
    pub fn accepted(&self) -> Vec<&str> {
        self.levels[self.min..].iter().rev().map(String::as_str).collect()
    }

    pub fn minimum(&self) -> &str {
        &self.levels[self.min]
    }

    /// Whether a reported `acr` meets the minimum. A value the settings do not list is
    /// not trusted.
    pub fn meets(&self, acr: &str) -> bool {
        self.levels.iter().position(|level| level == acr).is_some_and(|i| i >= self.min)
    }
}

/// One provider's settings, checked.
#[derive(Debug)]
pub struct ProviderSettings {
    pub id: ProviderId,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub auth: ClientAuth,
    pub scopes: Vec<String>,
    pub userinfo: bool,
    pub acr: Option<AcrPolicy>,
    pub redirect_uri: String,
    pub phone_redirect_uris: Vec<String>,
    pub leeway_secs: i64,
    pub id_token_algs: Vec<Algorithm>,
}

/// The whole file, checked, with the mapping it names.
#[derive(Debug)]
pub struct Settings {
    pub passwords: bool,
    pub providers: Vec<ProviderSettings>,
    pub mapping: Mapping,
}

/// The asymmetric algorithms an ID token may be signed with. HMAC (keyed with the client
/// secret) and `none` are never accepted.
const ID_TOKEN_ALGS: [(&str, Algorithm); 8] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
];

/// The RSA algorithms a client assertion may be signed with.
const ASSERTION_ALGS: [(&str, Algorithm); 6] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
];

fn algorithm(table: &[(&str, Algorithm)], name: &str) -> Option<Algorithm> {
    table.iter().find(|(n, _)| *n == name).map(|(_, alg)| *alg)
}

/// Whether a URL may be used to talk to a provider: HTTPS, or plain HTTP to this machine
/// only (a provider under test on loopback).
pub fn transport_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

impl Settings {
    /// Reads and checks the settings file at `path` and the mapping it names.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the sign-in settings {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|name| std::env::var(name).ok())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses settings whose relative paths start at `base`; `env` reads the environment.
    pub fn parse(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ids = BTreeSet::new();
        let mut providers = Vec::with_capacity(file.providers.len());
        for provider in file.providers {
            anyhow::ensure!(ids.insert(provider.id.clone()), "two providers have the id `{}`", provider.id);
            let id = provider.id.clone();
            providers
                .push(provider_settings(provider, base, env).map_err(|e| anyhow::anyhow!("provider `{id}`: {e}"))?);
        }
        anyhow::ensure!(
            file.passwords || !providers.is_empty(),
            "passwords are switched off (`passwords = false`) but no provider is configured: nobody could sign in"
        );
        let mapping_path = base.join(&file.mapping);
        let mapping_text = std::fs::read_to_string(&mapping_path)
            .map_err(|e| anyhow::anyhow!("cannot read the claims mapping {}: {e}", mapping_path.display()))?;
        let mapping = Mapping::parse(&mapping_text)
            .map_err(|e| anyhow::anyhow!("the claims mapping {}: {e}", mapping_path.display()))?;
        for rule_provider in mapping.providers() {
            anyhow::ensure!(
                ids.contains(rule_provider),
                "the claims mapping names the provider `{rule_provider}`, which is not configured"
            );
        }
        Ok(Self { passwords: file.passwords, providers, mapping })
    }
}

fn provider_settings(
    file: ProviderFile,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ProviderSettings> {
    anyhow::ensure!(!file.name.trim().is_empty(), "`name` must not be empty");
    anyhow::ensure!(!file.client_id.is_empty(), "`client_id` must not be empty");
    anyhow::ensure!(
        transport_allowed(&file.issuer),
        "`issuer` must be an https:// URL (plain http only to this machine, for a provider under test)"
    );
    anyhow::ensure!(file.scopes.iter().any(|s| s == "openid"), "`scopes` must include `openid`");
    anyhow::ensure!(
        file.scopes.iter().all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')),
        "each scope is one word of printable ASCII"
    );
    anyhow::ensure!(
        file.redirect_uri.ends_with("/dashboard/oidc/callback") && transport_allowed(&file.redirect_uri),
        "`redirect_uri` must be this server's https://HOST/dashboard/oidc/callback, as registered with the provider"
    );
    for uri in &file.phone_redirect_uris {
        anyhow::ensure!(
            uri.contains(':') && !uri.chars().any(char::is_whitespace) && !uri.contains('#'),
            "`phone_redirect_uris`: `{uri}` is not an absolute URI without a fragment"
        );
    }
    let auth = match (&file.private_key_file, &file.client_secret_env) {
        (Some(key_file), None) => {
            anyhow::ensure!(
                file.client_secret_method.is_none(),
                "`client_secret_method` goes with `client_secret_env`"
            );
            let alg = match &file.private_key_alg {
                None => Algorithm::RS256,
                Some(name) => algorithm(&ASSERTION_ALGS, name).ok_or_else(|| {
                    anyhow::anyhow!("`private_key_alg` must be one of RS256, RS384, RS512, PS256, PS384, PS512")
                })?,
            };
            let path = base.join(key_file);
            let pem = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read the private key {}: {e}", path.display()))?;
            let key = PrivateKey::from_pem(&pem, file.private_key_id.clone(), alg)
                .map_err(|e| anyhow::anyhow!("the private key {}: {e}", path.display()))?;
            ClientAuth::PrivateKeyJwt(key)
        }
        (None, Some(var)) => {
            anyhow::ensure!(
                file.private_key_id.is_none() && file.private_key_alg.is_none(),
                "`private_key_id` and `private_key_alg` go with `private_key_file`"
            );
            let secret = env(var)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow::anyhow!("the client secret's variable `{var}` is not set"))?;
            match file.client_secret_method.as_deref() {
                None | Some("client_secret_basic") => ClientAuth::SecretBasic(Secret::from(secret)),
                Some("client_secret_post") => ClientAuth::SecretPost(Secret::from(secret)),
                Some(_) => anyhow::bail!("`client_secret_method` is `client_secret_basic` or `client_secret_post`"),
            }
        }
        (Some(_), Some(_)) => anyhow::bail!("give `private_key_file` or `client_secret_env`, not both"),
        (None, None) => {
            anyhow::bail!(
                "the client must authenticate: give `private_key_file` (private_key_jwt) or `client_secret_env`"
            )
        }
    };
    let acr = match &file.min_acr {
        None => {
            anyhow::ensure!(file.acr_levels.is_empty(), "`acr_levels` goes with `min_acr`");
            None
        }
        Some(min) => {
            let levels = if file.acr_levels.is_empty() { vec![min.clone()] } else { file.acr_levels.clone() };
            let min = levels
                .iter()
                .position(|level| level == min)
                .ok_or_else(|| anyhow::anyhow!("`min_acr` `{min}` is not one of `acr_levels`"))?;
            Some(AcrPolicy { levels, min })
        }
    };
    let leeway = file.clock_leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS);
    anyhow::ensure!(leeway <= MAX_LEEWAY_SECS, "`clock_leeway_secs` is at most {MAX_LEEWAY_SECS}");
    let id_token_algs = match &file.id_token_algs {
        None => ID_TOKEN_ALGS.iter().map(|(_, alg)| *alg).collect(),
        Some(names) => {
            anyhow::ensure!(!names.is_empty(), "`id_token_algs` must not be empty");
            names
                .iter()
                .map(|name| {
                    algorithm(&ID_TOKEN_ALGS, name).ok_or_else(|| {
                        anyhow::anyhow!("`id_token_algs`: `{name}` is not an asymmetric JWS algorithm Tether accepts")
                    })
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    Ok(ProviderSettings {
        id: file.id,
        name: file.name,
        issuer: file.issuer,
        client_id: file.client_id,
        auth,
        scopes: file.scopes,
        userinfo: file.userinfo,
        acr,
        redirect_uri: file.redirect_uri,
        phone_redirect_uris: file.phone_redirect_uris,
        leeway_secs: i64::try_from(leeway).unwrap_or(60),
        id_token_algs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().expect("a directory");
        std::fs::write(
            dir.path().join("mapping.toml"),
            "[[rule]]\nprovider = \"test\"\ngroup = \"g\"\nteams = [\"north\"]\nrole = \"practitioner\"\n",
        )
        .expect("write the mapping");
        Settings::parse(text, dir.path(), &|name| (name == "SECRET").then(|| "s3cret".to_owned()))
    }

    const PROVIDER: &str = r#"
mapping = "mapping.toml"
[[provider]]
id = "test"
name = "Test"
issuer = "http://127.0.0.1:9400"
client_id = "tether"
client_secret_env = "SECRET"
redirect_uri = "http://127.0.0.1:8080/dashboard/oidc/callback"
"#;

    #[test]
    fn a_provider_with_a_client_secret_is_read_with_its_defaults() {
        let settings = parse(PROVIDER).expect("valid settings");
        assert!(settings.passwords);
        let provider = &settings.providers[0];
        assert_eq!(provider.id.as_str(), "test");
        assert_eq!(provider.scopes, ["openid", "profile"]);
        assert_eq!(provider.leeway_secs, 60);
        assert!(matches!(provider.auth, ClientAuth::SecretBasic(_)));
        assert!(!provider.id_token_algs.contains(&Algorithm::HS256));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (PROVIDER.replace("http://127.0.0.1:9400", "http://idp.example.org"), "`issuer` must be an https://"),
            (PROVIDER.replace("client_secret_env = \"SECRET\"", "client_secret_env = \"NOPE\""), "`NOPE` is not set"),
            (PROVIDER.replace("client_secret_env = \"SECRET\"\n", ""), "the client must authenticate"),
            (format!("{PROVIDER}min_acr = \"AAL3\"\nacr_levels = [\"AAL1\"]\n"), "`min_acr` `AAL3` is not one of"),
            (format!("{PROVIDER}id_token_algs = [\"HS256\"]\n"), "`HS256` is not an asymmetric"),
            (format!("{PROVIDER}clock_leeway_secs = 3600\n"), "at most 300"),
            (format!("{PROVIDER}scopes = [\"profile\"]\n"), "must include `openid`"),
            (format!("{PROVIDER}surprise = 1\n"), "unknown field `surprise`"),
            (PROVIDER.replace("id = \"test\"", "id = \"Test Provider\""), "lowercase letters"),
            (
                format!("passwords = false\n{}", PROVIDER.split("[[provider]]").next().unwrap_or("")),
                "nobody could sign in",
            ),
            (PROVIDER.replace("/dashboard/oidc/callback", "/elsewhere"), "/dashboard/oidc/callback"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", parse(&text).expect_err(expected));
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn acr_levels_are_ordered_weakest_first() {
        let text = format!("{PROVIDER}acr_levels = [\"AAL1\", \"AAL2\", \"AAL3\"]\nmin_acr = \"AAL2\"\n");
        let settings = parse(&text).expect("valid settings");
        let acr = settings.providers[0].acr.as_ref().expect("a policy");
        assert_eq!(acr.accepted(), ["AAL3", "AAL2"]);
        assert!(acr.meets("AAL2") && acr.meets("AAL3"));
        assert!(!acr.meets("AAL1") && !acr.meets("AAL9") && !acr.meets(""));
    }

    #[test]
    fn only_https_or_loopback_http_reaches_a_provider() {
        for url in ["https://idp.example.org", "http://127.0.0.1:9400", "http://localhost/x", "http://[::1]:80/"] {
            assert!(transport_allowed(url), "{url}");
        }
        for url in ["http://idp.example.org", "http://127.0.0.1.example.org/", "ftp://127.0.0.1", "http://10.0.0.1/"] {
            assert!(!transport_allowed(url), "{url}");
        }
    }
}
