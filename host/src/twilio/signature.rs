//! `X-Twilio-Signature`: HMAC-SHA1 with the auth token over the full URL
//! followed by the POST parameters sorted by name (name then value, no
//! separators), base64. Compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

pub const HEADER: &str = "x-twilio-signature";

/// The signature Twilio would send for `url` and form `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Sort by name, then value, so repeated names are deterministic, as
    // Twilio's own helper libraries do.
    sorted.sort();
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is valid for `url` and `params`. Twilio may sign the
/// URL with or without the default port, so both forms are accepted.
pub fn is_valid(auth_token: &str, signature: &str, url: &str, params: &[(String, String)]) -> bool {
    let expected = compute(auth_token, url, params);
    if bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        return true;
    }
    match alternate_port_form(url) {
        Some(other) => bool::from(
            compute(auth_token, &other, params)
                .as_bytes()
                .ct_eq(signature.as_bytes()),
        ),
        None => false,
    }
}

/// `https://host/x` <-> `https://host:443/x` (and 80 for http).
fn alternate_port_form(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let port = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let with_port = format!(":{port}");
    if let Some(host) = authority.strip_suffix(&with_port) {
        Some(format!("{scheme}://{host}{path}"))
    } else if !authority.contains(':') {
        Some(format!("{scheme}://{authority}{with_port}{path}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const DOCS_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn matches_twilios_worked_example() {
        // Twilio's request-validation documentation: token 12345.
        assert_eq!(
            compute("12345", DOCS_URL, &docs_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let mut reversed = docs_params();
        reversed.reverse();
        assert!(is_valid(
            "12345",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            DOCS_URL,
            &reversed
        ));
    }

    #[test]
    fn rejects_tampering_and_the_wrong_token() {
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let mut tampered = docs_params();
        tampered[2].1 = "9999".into();
        assert!(!is_valid("12345", sig, DOCS_URL, &tampered));
        assert!(!is_valid("54321", sig, DOCS_URL, &docs_params()));
        assert!(!is_valid(
            "12345",
            sig,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &docs_params()
        ));
        assert!(!is_valid("12345", "", DOCS_URL, &docs_params()));
    }

    #[test]
    fn accepts_the_url_with_or_without_the_default_port() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let sig = compute("12345", with_port, &docs_params());
        assert!(is_valid("12345", &sig, DOCS_URL, &docs_params()));
        assert!(is_valid(
            "12345",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            with_port,
            &docs_params()
        ));
        // A WebSocket upgrade is signed over the URL alone.
        let ws = "wss://example.com/twilio/media-stream";
        assert!(is_valid("tok", &compute("tok", ws, &[]), ws, &[]));
    }
}
