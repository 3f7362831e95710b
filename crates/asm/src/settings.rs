//! What the client needs to know: which API (School or Business), the API account and its key,
//! and where the endpoints are.

use std::fmt;
use std::time::Duration;

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use zeroize::Zeroizing;

use crate::AsmError;

/// The OAuth audience of the client assertion, as Apple's "Implementing OAuth for the Apple
/// School Manager and Apple Business API" gives it (see `docs/protocol.md`, Apple School
/// Manager API).
pub const DEFAULT_AUDIENCE: &str = "https://account.apple.com/auth/oauth2/v2/token";
/// Where the client assertion is exchanged for an access token.
pub const DEFAULT_TOKEN_URL: &str = "https://account.apple.com/auth/oauth2/token";
/// Every request's deadline (connect, send, read the whole answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Apple School Manager or Apple Business: the API host and the OAuth scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    School,
    Business,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::School => "school",
            Kind::Business => "business",
        }
    }

    /// The OAuth scope the token request asks for.
    pub fn scope(self) -> &'static str {
        match self {
            Kind::School => "school.api",
            Kind::Business => "business.api",
        }
    }

    /// The API's base URL (the `v1` resources hang under it).
    pub fn default_api_url(self) -> &'static str {
        match self {
            Kind::School => "https://api-school.apple.com/",
            Kind::Business => "https://api-business.apple.com/",
        }
    }

    /// What people call it, for messages.
    pub fn product(self) -> &'static str {
        match self {
            Kind::School => "Apple School Manager",
            Kind::Business => "Apple Business Manager",
        }
    }
}

/// The API account's private key (P-256), held as PKCS#8 DER. `Debug` prints `***`; the bytes
/// are wiped when dropped.
#[derive(Clone)]
pub struct PrivateKey(Zeroizing<Vec<u8>>);

impl PrivateKey {
    /// Reads a PEM key as Apple School Manager's "Generate Private Key" gives it: SEC1
    /// ("EC PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"). The error never quotes the file.
    pub fn from_pem(pem: &str) -> Result<PrivateKey, AsmError> {
        let key = if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(pem)
                .map_err(|_| AsmError::Key("not a valid P-256 EC private key".into()))?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            p256::SecretKey::from_pkcs8_pem(pem)
                .map_err(|_| AsmError::Key("not a valid P-256 PKCS#8 private key".into()))?
        } else {
            return Err(AsmError::Key(
                "not a PEM private key (expected \"BEGIN EC PRIVATE KEY\" or \"BEGIN PRIVATE KEY\")"
                    .into(),
            ));
        };
        let der = key
            .to_pkcs8_der()
            .map_err(|_| AsmError::Key("cannot re-encode the key".into()))?;
        Ok(PrivateKey(Zeroizing::new(der.as_bytes().to_vec())))
    }

    /// A new random key (tests and the simulator's demo account).
    pub fn generate() -> PrivateKey {
        let key = p256::SecretKey::random(&mut rand_core::OsRng);
        let der = key
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        PrivateKey(Zeroizing::new(der))
    }

    /// The key as PKCS#8 PEM, for writing a 0600 file.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, AsmError> {
        let key = p256::SecretKey::from_pkcs8_der(&self.0)
            .map_err(|_| AsmError::Key("not a valid P-256 key".into()))?;
        key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map(|s| Zeroizing::new(s.to_string()))
            .map_err(|_| AsmError::Key("cannot encode the key".into()))
    }

    /// The public half as SubjectPublicKeyInfo PEM: what Apple School Manager (or the
    /// simulator) registers to check assertions.
    pub fn public_key_pem(&self) -> Result<String, AsmError> {
        use p256::pkcs8::EncodePublicKey;
        let key = p256::SecretKey::from_pkcs8_der(&self.0)
            .map_err(|_| AsmError::Key("not a valid P-256 key".into()))?;
        key.public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| AsmError::Key("cannot encode the public key".into()))
    }

    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything the client needs.
#[derive(Clone, Debug)]
pub struct AsmSettings {
    pub kind: Kind,
    /// The API account's client ID (`SCHOOLAPI.…` or `BUSINESSAPI.…`).
    pub client_id: String,
    /// The key's ID, shown next to the client ID in Apple School Manager.
    pub key_id: String,
    pub private_key: PrivateKey,
    /// Base URL of the API; `None`: the kind's default host.
    pub api_url: Option<String>,
    /// `None`: [`DEFAULT_TOKEN_URL`].
    pub token_url: Option<String>,
    /// `None`: [`DEFAULT_AUDIENCE`].
    pub audience: Option<String>,
    /// Extra CA certificates (PEM) to trust: a proxy, or the simulator's fake API.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl AsmSettings {
    pub fn new(kind: Kind, client_id: String, key_id: String, private_key: PrivateKey) -> Self {
        AsmSettings {
            kind,
            client_id,
            key_id,
            private_key,
            api_url: None,
            token_url: None,
            audience: None,
            extra_ca_pem: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn api_url(&self) -> String {
        let base = self
            .api_url
            .clone()
            .unwrap_or_else(|| self.kind.default_api_url().to_owned());
        if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        }
    }

    pub fn token_url(&self) -> &str {
        self.token_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL)
    }

    pub fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(DEFAULT_AUDIENCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_pem_and_never_prints() {
        let key = PrivateKey::generate();
        let pem = key.to_pem().expect("pem");
        let again = PrivateKey::from_pem(&pem).expect("read back");
        assert_eq!(again.pkcs8_der(), key.pkcs8_der());
        assert_eq!(format!("{key:?}"), "***");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused_without_quoting_it() {
        let e = PrivateKey::from_pem("hello secret").expect_err("refused");
        assert!(!e.to_string().contains("hello secret"), "{e}");
        let e =
            PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .expect_err("refused");
        assert!(matches!(e, AsmError::Key(_)), "{e}");
    }

    #[test]
    fn the_kind_gives_the_host_and_scope() {
        assert_eq!(Kind::School.scope(), "school.api");
        assert_eq!(Kind::Business.scope(), "business.api");
        assert_eq!(
            Kind::School.default_api_url(),
            "https://api-school.apple.com/"
        );
        assert_eq!(
            Kind::Business.default_api_url(),
            "https://api-business.apple.com/"
        );
    }
}
