//! Twilio's REST API for call control (create, end, fetch a call). The base
//! URL is configurable so tests can point it at a local stand-in.

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("cannot reach Twilio: {0}")]
    Transport(String),
    #[error("Twilio refused the request ({status}): {message}")]
    Refused {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    #[error("unexpected answer from Twilio: {0}")]
    Decode(String),
    #[error("`{0}` is not a Twilio call SID (CA followed by 32 hex digits)")]
    BadSid(String),
}

/// A Twilio call SID: `CA` and 32 lower-case hex digits. Anything else never
/// reaches a REST URL (a path segment like `../Messages` would).
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34
        && sid.starts_with("CA")
        && sid[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn checked(sid: &str) -> Result<&str, RestError> {
    if is_call_sid(sid) {
        Ok(sid)
    } else {
        Err(RestError::BadSid(sid.chars().take(64).collect()))
    }
}

/// The fields of Twilio's Call resource that callpipe uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CallResource {
    pub sid: String,
    pub status: String,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    timeout: Duration,
    base: String,
    account_sid: String,
    auth_token: String,
}

/// What a new outbound call needs.
pub struct NewCall<'a> {
    pub to: &'a str,
    pub from: &'a str,
    /// Where Twilio fetches the TwiML when the call connects.
    pub twiml_url: &'a str,
    /// Where Twilio posts status changes.
    pub status_callback: &'a str,
}

impl TwilioClient {
    pub fn new(
        base: &str,
        account_sid: &str,
        auth_token: &str,
        timeout: Duration,
    ) -> Result<Self, RestError> {
        // No retries: creating a call is not idempotent. No redirects: the
        // account's credentials go with every request.
        let policy = callpipe_remote::Policy {
            timeout,
            retries: 0,
            backoff: Duration::ZERO,
        };
        let http =
            callpipe_remote::client(&policy).map_err(|e| RestError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            timeout,
            base: base.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
        })
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.base, self.account_sid
        )
    }

    fn call_url(&self, sid: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            self.base, self.account_sid, sid
        )
    }

    pub async fn create_call(&self, call: &NewCall<'_>) -> Result<CallResource, RestError> {
        let form = [
            ("To", call.to),
            ("From", call.from),
            ("Url", call.twiml_url),
            ("Method", "POST"),
            ("StatusCallback", call.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ];
        self.send(self.http.post(self.calls_url()).form(&form))
            .await
    }

    /// Hangs up a call in progress (`Status=completed`).
    pub async fn end_call(&self, sid: &str) -> Result<CallResource, RestError> {
        let sid = checked(sid)?;
        self.send(
            self.http
                .post(self.call_url(sid))
                .form(&[("Status", "completed")]),
        )
        .await
    }

    pub async fn fetch_call(&self, sid: &str) -> Result<CallResource, RestError> {
        let sid = checked(sid)?;
        self.send(self.http.get(self.call_url(sid))).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<CallResource, RestError> {
        let response = request
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| RestError::Transport(e.to_string()))?;
        let status = response.status();
        // A call resource is a couple of KiB.
        let body = callpipe_remote::read_limited(response, 1 << 20)
            .await
            .map_err(|e| RestError::Transport(e.to_string()))?;
        if !status.is_success() {
            let err: Option<TwilioError> = serde_json::from_slice(&body).ok();
            return Err(RestError::Refused {
                status: status.as_u16(),
                code: err.as_ref().and_then(|e| e.code),
                message: err
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect()),
            });
        }
        serde_json::from_slice(&body).map_err(|e| RestError::Decode(e.to_string()))
    }
}

/// A phone number in E.164: `+`, a non-zero digit, at most 15 digits.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_call_sids_reach_a_url() {
        assert!(super::is_call_sid("CA0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "CA0123456789ABCDEF0123456789abcdef",
            "CA0123456789abcdef0123456789abcde",
            "CA0123456789abcdef0123456789abcdef0",
            "SM0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abc/..",
            "../../Messages",
        ] {
            assert!(!super::is_call_sid(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn e164_numbers() {
        assert!(is_e164("+33612345678"));
        assert!(is_e164("+14155552671"));
        assert!(!is_e164("0612345678"));
        assert!(!is_e164("+0612345678"));
        assert!(!is_e164("+33 6 12 34 56 78"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+"));
    }
}
