#![allow(clippy::unwrap_used)]

use super::test_keys::{TestKey, jwks};
use super::*;

const SECRET: &[u8] = b"test-secret-of-thirty-two-bytes!";

#[test]
fn round_trip() {
    let token = mint(SECRET, "alice", Duration::from_secs(60)).unwrap();
    let user = TokenVerifier::new(SECRET)
        .verify_header(Some(&format!("Bearer {token}")))
        .unwrap();
    assert_eq!(user.as_str(), "alice");
}

#[test]
fn wrong_secret_is_rejected() {
    let token = mint(
        b"other-secret-of-thirty-two-bytes",
        "alice",
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(TokenVerifier::new(SECRET).verify(&token).is_err());
}

#[test]
fn missing_or_malformed_header_is_rejected() {
    let v = TokenVerifier::new(SECRET);
    assert!(v.verify_header(None).is_err());
    assert!(v.verify_header(Some("Basic abc")).is_err());
    assert!(v.verify_header(Some("Bearer not.a.jwt")).is_err());
    assert!(v.verify(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
}

#[test]
fn an_accepted_token_expires_like_any_other() {
    let v = TokenVerifier::new(SECRET);
    let token = mint(SECRET, "alice", Duration::from_secs(60)).unwrap();
    let now = unix_now();
    assert_eq!(v.verify_at(&token, now).unwrap().as_str(), "alice");
    assert_eq!(v.verify_at(&token, now).unwrap().as_str(), "alice");
    // 60 s of life plus the 30 s leeway, then no more, from the cache as from a decode.
    assert!(v.verify_at(&token, now + 89).is_ok());
    assert!(v.verify_at(&token, now + 120).is_err());
}

#[test]
fn an_accepted_token_does_not_vouch_for_a_tampered_copy() {
    let v = TokenVerifier::new(SECRET);
    let alice = mint(SECRET, "alice", Duration::from_secs(60)).unwrap();
    let mallory = mint(SECRET, "mallory", Duration::from_secs(60)).unwrap();
    v.verify(&alice).unwrap();
    // Alice's header and signature around another payload.
    let [header, _, signature]: [&str; 3] =
        alice.split('.').collect::<Vec<_>>().try_into().unwrap();
    let payload = mallory.split('.').nth(1).unwrap();
    let tampered = format!("{header}.{payload}.{signature}");
    assert!(v.verify(&tampered).is_err());
    let accepted = v.accepted.lock().unwrap();
    assert!(accepted.tokens.contains_key(alice.as_str()));
    assert!(
        !accepted.tokens.contains_key(tampered.as_str()),
        "refused tokens are not kept"
    );
}

#[test]
fn the_kept_tokens_stay_bounded() {
    let v = TokenVerifier::new(SECRET);
    for i in 0..MAX_ACCEPTED + 10 {
        let token = mint(SECRET, &format!("user{i}"), Duration::from_secs(60)).unwrap();
        v.verify(&token).unwrap();
    }
    let kept = v.accepted.lock().unwrap().tokens.len();
    assert!((1..=MAX_ACCEPTED).contains(&kept), "{kept}");
}

#[test]
fn unsigned_and_other_algorithms_are_refused() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, unix_now() + 60);
    let v = TokenVerifier::new(SECRET);
    for alg in ["none", "HS384", "RS256", "ES256"] {
        let token = format!(
            "{}.{}.",
            b64(&format!(r#"{{"alg":"{alg}"}}"#)),
            b64(&claims)
        );
        assert!(v.verify(&token).is_err(), "{alg}");
    }
}

fn claims(iss: Option<&str>, aud: Option<&str>) -> Claims {
    let mut claims = claims_for("alice", Duration::from_secs(60)).unwrap();
    claims.iss = iss.map(str::to_owned);
    claims.aud = aud.map(str::to_owned);
    claims
}

async fn jwks_verifier(keys: &[&TestKey], file: &std::path::Path) -> TokenVerifier {
    std::fs::write(file, jwks(keys).to_string()).unwrap();
    let source = JwksSource::parse(&format!("file://{}", file.display())).unwrap();
    let jwks = Jwks::load(source, Duration::ZERO).await.unwrap();
    TokenVerifier::with_keys(
        Keys::Jwks(jwks),
        Expectations {
            issuer: Some("https://id.example".into()),
            audience: Some("taskmesh".into()),
        },
    )
}

#[tokio::test]
async fn jwks_tokens_need_their_key_issuer_and_audience() {
    let dir = tempfile::tempdir().unwrap();
    let es = TestKey::es256("es-1").unwrap();
    let rs = TestKey::rs256("rs-1").unwrap();
    let v = jwks_verifier(&[&es, &rs], &dir.path().join("jwks.json")).await;
    let good = claims(Some("https://id.example"), Some("taskmesh"));
    for key in [&es, &rs] {
        let token = key.sign(&good).unwrap();
        assert_eq!(v.verify_fresh(&token).await.unwrap().as_str(), "alice");
    }
    let refused = [
        (
            es.sign(&claims(Some("https://evil.example"), Some("taskmesh"))),
            "issuer",
        ),
        (
            es.sign(&claims(Some("https://id.example"), Some("other"))),
            "audience",
        ),
        (es.sign(&claims(None, Some("taskmesh"))), "claim"),
        (es.sign(&claims(Some("https://id.example"), None)), "claim"),
        (
            TestKey::es256("es-2").unwrap().sign(&good),
            "unknown signing key",
        ),
        (mint(SECRET, "alice", Duration::from_secs(60)), "key id"),
    ];
    for (token, why) in refused {
        let err = v.verify_fresh(&token.unwrap()).await.unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}

#[tokio::test]
async fn a_key_of_the_wrong_family_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let es = TestKey::es256("shared-kid").unwrap();
    let v = jwks_verifier(&[&es], &dir.path().join("jwks.json")).await;
    // An RS256 token naming the ES256 key's id.
    let rs = TestKey::rs256("shared-kid").unwrap();
    let token = rs
        .sign(&claims(Some("https://id.example"), Some("taskmesh")))
        .unwrap();
    let err = v.verify_fresh(&token).await.unwrap_err();
    assert!(err.to_string().contains("algorithm"), "{err}");
}

#[tokio::test]
async fn rotation_adds_keys_and_withdrawn_keys_stop_vouching() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let old = TestKey::es256("old").unwrap();
    let new = TestKey::es256("new").unwrap();
    let v = jwks_verifier(&[&old], &file).await;
    let good = claims(Some("https://id.example"), Some("taskmesh"));
    let old_token = old.sign(&good).unwrap();
    let new_token = new.sign(&good).unwrap();
    v.verify_fresh(&old_token).await.unwrap();
    assert!(v.verify(&new_token).is_err(), "not known before a refresh");

    // The provider publishes the next key: a token naming it makes the verifier refetch.
    std::fs::write(&file, jwks(&[&old, &new]).to_string()).unwrap();
    v.verify_fresh(&new_token).await.unwrap();
    v.verify_fresh(&old_token).await.unwrap();

    // The provider withdraws the old key: accepted tokens are forgotten with it.
    std::fs::write(&file, jwks(&[&new]).to_string()).unwrap();
    let Keys::Jwks(jwks) = &v.keys else {
        unreachable!()
    };
    jwks.refresh().await.unwrap();
    assert!(v.verify_fresh(&old_token).await.is_err());
    v.verify_fresh(&new_token).await.unwrap();
}

#[tokio::test]
async fn unknown_key_ids_refetch_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let key = TestKey::es256("k").unwrap();
    std::fs::write(&file, jwks(&[&key]).to_string()).unwrap();
    let source = JwksSource::parse(&format!("file://{}", file.display())).unwrap();
    let jwks = Jwks::load(source, Duration::from_secs(3600)).await.unwrap();
    assert!(jwks.refresh_for_unknown_kid().await);
    assert!(!jwks.refresh_for_unknown_kid().await, "rate-limited");
}

#[tokio::test]
async fn unusable_key_sets_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let source = || JwksSource::parse(&format!("file://{}", file.display())).unwrap();
    for (text, why) in [
        ("not json", "not a JSON Web Key Set"),
        (r#"{"keys":[]}"#, "no RS256 or ES256 key"),
        (
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
            "no RS256 or ES256 key",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = Jwks::load(source(), Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains(why), "{text}: {err}");
    }
    std::fs::remove_file(&file).unwrap();
    assert!(Jwks::load(source(), Duration::ZERO).await.is_err());
}

#[test]
fn jwks_locations() {
    for ok in [
        "https://id.example/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9/jwks",
        "file:///etc/taskmesh/jwks.json",
    ] {
        assert!(JwksSource::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://id.example/jwks",
        "file://relative",
        "ftp://x",
        "",
        "jwks.json",
    ] {
        assert!(JwksSource::parse(bad).is_err(), "{bad}");
    }
}
