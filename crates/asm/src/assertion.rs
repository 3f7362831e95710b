//! The client assertion: an ES256 JSON web token signed with the API account's private key,
//! exchanged for an access token (RFC 7523 client authentication, as Apple's "Implementing
//! OAuth for the Apple School Manager and Apple Business API" describes it).
//!
//! Header: `alg` ES256, `kid` the key ID. Claims: `iss` and `sub` the client ID, `aud` the
//! token audience, `iat`, `exp` and a unique `jti`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::{AsmError, AsmSettings};

/// How long an assertion is valid. Apple accepts up to 180 days; one is made per token
/// request, so a short life limits what a leaked assertion allows.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The claims of a client assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// Signs a new client assertion for `settings` at `now`.
pub fn client_assertion(settings: &AsmSettings, now: SystemTime) -> Result<String, AsmError> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AsmError::Config("the system clock is before 1970".into()))?
        .as_secs();
    let mut nonce = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let claims = Claims {
        iss: settings.client_id.clone(),
        sub: settings.client_id.clone(),
        aud: settings.audience().to_owned(),
        iat,
        exp: iat + ASSERTION_LIFETIME.as_secs(),
        jti: nonce.iter().map(|b| format!("{b:02x}")).collect(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(settings.key_id.clone());
    let key = EncodingKey::from_ec_der(settings.private_key.pkcs8_der());
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| AsmError::Key(format!("cannot sign the client assertion: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, PrivateKey};
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

    fn settings(key: PrivateKey) -> AsmSettings {
        AsmSettings::new(
            Kind::School,
            "SCHOOLAPI.0000-test".into(),
            "key-1".into(),
            key,
        )
    }

    #[test]
    fn the_assertion_carries_the_documented_header_and_claims_and_verifies_with_the_public_key() {
        let key = PrivateKey::generate();
        let public = key.public_key_pem().expect("public key");
        let s = settings(key);
        let jwt = client_assertion(&s, SystemTime::now()).expect("signed");
        let header = decode_header(&jwt).expect("header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[crate::settings::DEFAULT_AUDIENCE]);
        v.set_issuer(&["SCHOOLAPI.0000-test"]);
        let decoding = DecodingKey::from_ec_pem(public.as_bytes()).expect("decoding key");
        let data = decode::<Claims>(&jwt, &decoding, &v).expect("valid");
        assert_eq!(data.claims.sub, "SCHOOLAPI.0000-test");
        assert_eq!(
            data.claims.exp - data.claims.iat,
            ASSERTION_LIFETIME.as_secs()
        );
        assert_eq!(data.claims.jti.len(), 32);
    }

    #[test]
    fn an_assertion_signed_by_another_key_does_not_verify() {
        let other = PrivateKey::generate().public_key_pem().expect("public");
        let jwt =
            client_assertion(&settings(PrivateKey::generate()), SystemTime::now()).expect("signed");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[crate::settings::DEFAULT_AUDIENCE]);
        let decoding = DecodingKey::from_ec_pem(other.as_bytes()).expect("decoding key");
        assert!(decode::<Claims>(&jwt, &decoding, &v).is_err());
    }
}
