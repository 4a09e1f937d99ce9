//! Tokens shaped as SPIRE's JWT-SVIDs, for the token providers and their doubles.

/// A JWT-shaped token with the given claims (unsigned: nobody verifies it here).
pub fn jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2ln",
        e.encode(r#"{"alg":"ES256","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// The marshal's JWT-SVID for audience `system-compute`, expiring `secs_from_now`
/// from now (negative: already expired).
pub fn token_exp(secs_from_now: i64) -> String {
    jwt(&serde_json::json!({
        "sub": sbps_marshal::inventory::spire::SPIFFE_ID,
        "aud": ["system-compute"],
        "exp": now_secs() as i64 + secs_from_now,
    }))
}
