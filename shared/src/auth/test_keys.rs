//! Signing keys for tests: an identity provider's key pair and its public JWK, made with
//! the `openssl` command (present wherever the tests run), so that tests sign RS256 and
//! ES256 tokens the way a real provider does.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{Claims, MintError};

pub struct TestKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK.
    pub jwk: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
#[error("openssl {step}: {reason}")]
pub struct KeyError {
    step: &'static str,
    reason: String,
}

fn openssl(step: &'static str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, KeyError> {
    let fail = |reason: String| KeyError { step, reason };
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(out.stdout)
}

impl TestKey {
    /// A P-256 key pair for ES256.
    pub fn es256(kid: &str) -> Result<Self, KeyError> {
        let pem = openssl(
            "genpkey",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            b"",
        )?;
        let der = openssl("pkey", &["pkey", "-pubout", "-outform", "DER"], &pem)?;
        // SubjectPublicKeyInfo of a P-256 key: 26 bytes of header, 0x04, then x and y.
        let point = der.get(der.len().saturating_sub(64)..).unwrap_or_default();
        let (x, y) = point.split_at(point.len() / 2);
        Ok(Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            // PKCS#8, as jsonwebtoken reads EC keys.
            encoding: EncodingKey::from_ec_der(&openssl(
                "pkcs8",
                &["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"],
                &pem,
            )?),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
        })
    }

    /// A 2048-bit RSA key pair for RS256.
    pub fn rs256(kid: &str) -> Result<Self, KeyError> {
        let pem = openssl(
            "genpkey",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            b"",
        )?;
        let text = openssl("rsa", &["rsa", "-noout", "-modulus"], &pem)?;
        let hex = String::from_utf8_lossy(&text);
        let hex = hex.trim().trim_start_matches("Modulus=");
        let modulus: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        Ok(Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            // PKCS#1, as jsonwebtoken reads RSA keys.
            encoding: EncodingKey::from_rsa_der(&openssl(
                "pkcs1",
                &["rsa", "-traditional", "-outform", "DER"],
                &pem,
            )?),
            jwk: serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(modulus), "e": "AQAB",
            }),
        })
    }

    /// A token with these claims, signed with this key and naming its key id.
    pub fn sign(&self, claims: &Claims) -> Result<String, MintError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        super::mint_with(&header, &self.encoding, claims)
    }
}

/// A JWKS document of these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}
