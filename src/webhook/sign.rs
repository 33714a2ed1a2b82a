//! Webhook signatures with ring's HMAC-SHA256, and their verification.
//!
//! Pure. Two schemes go on every attempt: `X-CCTelegram-Signature`
//! (`sha256=` and the hex HMAC of the body, keyed by the secret's UTF-8
//! bytes, as the spec's receivers check it) and Standard Webhooks
//! (`v1,` and the base64 HMAC of `id.timestamp.body`).

use ring::hmac;

/// How far a signed timestamp may be from now (the spec's receivers use 5
/// minutes too).
pub const TOLERANCE_SECS: u64 = 300;

fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `X-CCTelegram-Signature` header value.
pub fn cctelegram_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex(hmac::sign(&key(secret.as_bytes()), body).as_ref())
    )
}

/// The Standard Webhooks key: the secret's bytes, or the decoded base64 of
/// a secret written `whsec_<base64>`.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(base64_decode)
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header value.
pub fn standard_signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(&key(&standard_key(secret)));
    ctx.update(format!("{id}.{timestamp}.").as_bytes());
    ctx.update(body);
    format!("v1,{}", base64_encode(ctx.sign().as_ref()))
}

/// The `webhook-signature` header value during a rotation: one `v1,`
/// entry per secret, space-separated, as Standard Webhooks lists them.
pub fn standard_signatures(secrets: &[String], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| standard_signature(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signature is not valid.
#[derive(Debug, PartialEq)]
pub enum Invalid {
    Format,
    Mismatch,
    Stale { skew_secs: u64 },
    NeedsId,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Format => f.write_str("the signature is neither sha256=<hex> nor v1,<base64>"),
            Invalid::Mismatch => f.write_str("the signature does not match this body and secret"),
            Invalid::Stale { skew_secs } => write!(
                f,
                "the timestamp is {skew_secs} s from now, more than the {TOLERANCE_SECS} s allowed"
            ),
            Invalid::NeedsId => f.write_str("a v1, signature needs --id and --timestamp"),
        }
    }
}

/// Checks a signature the way a receiver should: constant-time comparison
/// (ring's `hmac::verify`) and a 5-minute window around `now` when a
/// timestamp is given. `signature` is either header's value; Standard
/// Webhooks' may list several space-separated signatures.
pub fn verify(
    secret: &str,
    id: Option<&str>,
    timestamp: Option<u64>,
    signature: &str,
    body: &[u8],
    now: u64,
) -> Result<(), Invalid> {
    if let Some(ts) = timestamp {
        let skew = ts.abs_diff(now);
        if skew > TOLERANCE_SECS {
            return Err(Invalid::Stale { skew_secs: skew });
        }
    }
    let signature = signature.trim();
    if let Some(h) = signature.strip_prefix("sha256=") {
        let tag = unhex(h).ok_or(Invalid::Format)?;
        return hmac::verify(&key(secret.as_bytes()), body, &tag).map_err(|_| Invalid::Mismatch);
    }
    if signature.starts_with("v1,") {
        let (Some(id), Some(ts)) = (id, timestamp) else {
            return Err(Invalid::NeedsId);
        };
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        let k = key(&standard_key(secret));
        for candidate in signature.split_whitespace() {
            let Some(tag) = candidate.strip_prefix("v1,").and_then(base64_decode) else {
                continue;
            };
            if hmac::verify(&k, &msg, &tag).is_ok() {
                return Ok(());
            }
        }
        return Err(Invalid::Mismatch);
    }
    Err(Invalid::Format)
}

/// [`verify`] with several secrets and a header that may list several
/// signatures (space-separated, of either scheme): valid if any secret
/// matches any signature. A stale timestamp is refused whatever matches.
pub fn verify_any(
    secrets: &[&str],
    id: Option<&str>,
    timestamp: Option<u64>,
    signature: &str,
    body: &[u8],
    now: u64,
) -> Result<(), Invalid> {
    let mut worst = Invalid::Format;
    for candidate in signature.split_whitespace() {
        for secret in secrets {
            match verify(secret, id, timestamp, candidate, body, now) {
                Ok(()) => return Ok(()),
                Err(e @ Invalid::Stale { .. }) => return Err(e),
                Err(e) => {
                    // Report the most telling reason: a mismatch beats a
                    // format problem of another entry.
                    if worst == Invalid::Format || e == Invalid::NeedsId {
                        worst = e;
                    }
                }
            }
        }
    }
    Err(worst)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = cctelegram_signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{s} -> {e}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn verification_accepts_ours_and_refuses_the_rest() {
        let body = br#"{"a":1}"#;
        let sig = cctelegram_signature("s3cret", body);
        assert_eq!(verify("s3cret", None, Some(1000), &sig, body, 1100), Ok(()));
        assert_eq!(
            verify("other", None, None, &sig, body, 0),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            verify("s3cret", None, Some(1000), &sig, body, 1301),
            Err(Invalid::Stale { skew_secs: 301 })
        );
        let std = standard_signature("whsec_c2VjcmV0", "msg_1", 1000, body);
        assert_eq!(
            verify(
                "whsec_c2VjcmV0",
                Some("msg_1"),
                Some(1000),
                &std,
                body,
                1000
            ),
            Ok(())
        );
        // whsec_c2VjcmV0 is base64 of "secret": the same key as the plain secret.
        assert_eq!(standard_signature("secret", "msg_1", 1000, body), std);
        assert_eq!(
            verify("s", None, None, "md5=00", body, 0),
            Err(Invalid::Format)
        );
    }

    #[test]
    fn rotation_signs_once_per_secret_and_any_secret_verifies() {
        let body = br#"{"a":1}"#;
        let secrets = ["new".to_string(), "whsec_b2xk".to_string()];
        let header = standard_signatures(&secrets, "msg_1", 1000, body);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], standard_signature("old", "msg_1", 1000, body));
        for s in ["new", "old", "whsec_b2xk"] {
            assert_eq!(
                verify_any(&[s], Some("msg_1"), Some(1000), &header, body, 1000),
                Ok(()),
                "{s}"
            );
        }
        assert_eq!(
            verify_any(
                &["other", "new"],
                Some("msg_1"),
                Some(1000),
                &header,
                body,
                1000
            ),
            Ok(())
        );
        assert_eq!(
            verify_any(&["other"], Some("msg_1"), Some(1000), &header, body, 1000),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            verify_any(&["new"], Some("msg_1"), Some(1000), &header, body, 2000),
            Err(Invalid::Stale { skew_secs: 1000 })
        );
        let sha = cctelegram_signature("old", body);
        assert_eq!(
            verify_any(&["new", "old"], None, Some(1000), &sha, body, 1000),
            Ok(())
        );
    }
}
