//! The Twilio Media Streams protocol over the WebSocket, message by message.
//! <https://www.twilio.com/docs/voice/media-streams/websocket-messages>

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest text message accepted; a media message is about 400 bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// 20 ms of 8 kHz mu-law.
pub const FRAME_BYTES: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Track {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
    pub tracks: Vec<String>,
    pub custom_parameters: BTreeMap<String, String>,
    pub encoding: String,
    pub sample_rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub track: Track,
    pub chunk: u64,
    pub timestamp_ms: u64,
    pub payload: [u8; FRAME_BYTES],
}

/// A message Twilio sends us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Connected,
    Start(Box<Start>),
    Media(Media),
    Dtmf { track: Track, digit: String },
    Mark { name: String },
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    #[error("malformed `{event}` message: {message}")]
    Malformed {
        event: &'static str,
        message: String,
    },
    #[error("media payload is not valid base64")]
    BadBase64,
    #[error("media payload is {0} bytes, expected {FRAME_BYTES}")]
    BadPayloadSize(usize),
}

impl ParseError {
    /// Whether the stream can go on after this message was skipped. A message
    /// that is too large means a broken or hostile peer: close.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ParseError::TooLarge(_))
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartMsg {
    start: StartBody,
    #[serde(default)]
    stream_sid: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    #[serde(default)]
    stream_sid: Option<String>,
    call_sid: String,
    #[serde(default)]
    account_sid: String,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(default)]
    custom_parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    encoding: String,
    sample_rate: u32,
}

/// A media message: its event and body, the rest skipped.
#[derive(Deserialize)]
struct MediaMsg<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    media: MediaBody<'a>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(borrow)]
    track: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    chunk: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct DtmfMsg {
    dtmf: DtmfBody,
}

#[derive(Deserialize)]
struct DtmfBody {
    #[serde(default)]
    track: String,
    digit: String,
}

#[derive(Deserialize)]
struct MarkMsg {
    mark: MarkBody,
}

#[derive(Deserialize)]
struct MarkBody {
    name: String,
}

fn parse_track(s: &str) -> Option<Track> {
    match s {
        "inbound" | "inbound_track" => Some(Track::Inbound),
        "outbound" | "outbound_track" => Some(Track::Outbound),
        _ => None,
    }
}

fn malformed(event: &'static str, e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed {
        event,
        message: e.to_string(),
    }
}

/// A media message's body, checked and decoded.
fn media_of(media: &MediaBody<'_>) -> Result<Inbound, ParseError> {
    let track = parse_track(&media.track)
        .ok_or_else(|| malformed("media", format!("unknown track `{}`", media.track)))?;
    let timestamp_ms = media
        .timestamp
        .parse()
        .map_err(|_| malformed("media", "timestamp is not a number"))?;
    let chunk = match &media.chunk {
        Some(c) => c
            .parse()
            .map_err(|_| malformed("media", "chunk is not a number"))?,
        None => 0,
    };
    // 160 bytes encode to 216 base64 characters; refuse early anything else.
    let mut payload = [0u8; FRAME_BYTES];
    let mut scratch = [0u8; FRAME_BYTES + 3];
    let n = B64
        .decode_slice(media.payload.as_bytes(), &mut scratch)
        .map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => {
                ParseError::BadPayloadSize(media.payload.len() * 3 / 4)
            }
            base64::DecodeSliceError::DecodeError(_) => ParseError::BadBase64,
        })?;
    if n != FRAME_BYTES {
        return Err(ParseError::BadPayloadSize(n));
    }
    payload.copy_from_slice(&scratch[..FRAME_BYTES]);
    Ok(Inbound::Media(Media {
        track,
        chunk,
        timestamp_ms,
        payload,
    }))
}

/// Parses one text message from Twilio.
pub fn parse(text: &str) -> Result<Inbound, ParseError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    // Fifty media messages a second per track: read them in one pass. Any
    // other message, or a media message this does not take, goes the long
    // way, which names what is wrong with it.
    if let Ok(m) = serde_json::from_str::<MediaMsg>(text)
        && m.event == "media"
    {
        return media_of(&m.media);
    }
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    match &*envelope.event {
        "media" => {
            let m: MediaMsg = serde_json::from_str(text).map_err(|e| malformed("media", e))?;
            media_of(&m.media)
        }
        "connected" => Ok(Inbound::Connected),
        "start" => {
            let m: StartMsg = serde_json::from_str(text).map_err(|e| malformed("start", e))?;
            let stream_sid = m
                .stream_sid
                .or(m.start.stream_sid)
                .ok_or_else(|| malformed("start", "no streamSid"))?;
            let (encoding, sample_rate) = m
                .start
                .media_format
                .map_or(("audio/x-mulaw".to_string(), 8000), |f| {
                    (f.encoding, f.sample_rate)
                });
            if encoding != "audio/x-mulaw" || sample_rate != 8000 {
                return Err(malformed(
                    "start",
                    format!("unsupported media format {encoding} at {sample_rate} Hz"),
                ));
            }
            let custom_parameters = m
                .start
                .custom_parameters
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            Ok(Inbound::Start(Box::new(Start {
                stream_sid,
                call_sid: m.start.call_sid,
                account_sid: m.start.account_sid,
                tracks: m.start.tracks,
                custom_parameters,
                encoding,
                sample_rate,
            })))
        }
        "dtmf" => {
            let m: DtmfMsg = serde_json::from_str(text).map_err(|e| malformed("dtmf", e))?;
            let track = parse_track(&m.dtmf.track).unwrap_or(Track::Inbound);
            Ok(Inbound::Dtmf {
                track,
                digit: m.dtmf.digit,
            })
        }
        "mark" => {
            let m: MarkMsg = serde_json::from_str(text).map_err(|e| malformed("mark", e))?;
            Ok(Inbound::Mark { name: m.mark.name })
        }
        "stop" => Ok(Inbound::Stop),
        other => Err(ParseError::UnknownEvent(other.chars().take(64).collect())),
    }
}

/// Messages we send to Twilio on a bidirectional stream.
pub fn outbound_media(stream_sid: &str, mulaw: &[u8]) -> String {
    serde_json::json!({ "event": "media", "streamSid": stream_sid, "media": { "payload": B64.encode(mulaw) } })
        .to_string()
}

pub fn outbound_mark(stream_sid: &str, name: &str) -> String {
    serde_json::json!({ "event": "mark", "streamSid": stream_sid, "mark": { "name": name } })
        .to_string()
}

pub fn outbound_clear(stream_sid: &str) -> String {
    serde_json::json!({ "event": "clear", "streamSid": stream_sid }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(track: &str, payload: &str) -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"{track}","chunk":"1","timestamp":"5","payload":"{payload}"}},"streamSid":"MZ1"}}"#
        )
    }

    #[test]
    fn parses_twilio_documented_messages() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
            Ok(Inbound::Connected)
        );
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound","outbound"],"customParameters":{"session_id":"s1","technician_id":"t1","technician_name":"Jeanne"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;
        match parse(start).unwrap() {
            Inbound::Start(s) => {
                assert_eq!(s.stream_sid, "MZ1");
                assert_eq!(s.call_sid, "CA1");
                assert_eq!(s.custom_parameters["technician_name"], "Jeanne");
                assert_eq!(s.tracks, ["inbound", "outbound"]);
            }
            other => panic!("{other:?}"),
        }
        let payload = B64.encode([0xFFu8; 160]);
        match parse(&media("inbound", &payload)).unwrap() {
            Inbound::Media(m) => {
                assert_eq!((m.track, m.chunk, m.timestamp_ms), (Track::Inbound, 1, 5));
                assert_eq!(m.payload, [0xFF; 160]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(
                r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#
            ),
            Ok(Inbound::Dtmf {
                track: Track::Inbound,
                digit: "1".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"chunk-7"}}"#
            ),
            Ok(Inbound::Mark {
                name: "chunk-7".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#
            ),
            Ok(Inbound::Stop)
        );
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert!(matches!(parse("{not json"), Err(ParseError::Json(_))));
        assert!(
            matches!(parse(r#"{"event":"party"}"#), Err(ParseError::UnknownEvent(e)) if e == "party")
        );
        assert_eq!(
            parse(&media("inbound", "%%%not-base64%%%")),
            Err(ParseError::BadBase64)
        );
        assert_eq!(
            parse(&media("inbound", &B64.encode([1u8; 80]))),
            Err(ParseError::BadPayloadSize(80))
        );
        assert!(matches!(
            parse(&media("inbound", &B64.encode([1u8; 4000]))),
            Err(ParseError::BadPayloadSize(_))
        ));
        assert!(matches!(
            parse(&media("sideways", &B64.encode([1u8; 160]))),
            Err(ParseError::Malformed { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"media"}"#),
            Err(ParseError::Malformed { event: "media", .. })
        ));
        let huge = format!(
            r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#,
            "x".repeat(70_000)
        );
        let err = parse(&huge).unwrap_err();
        assert!(err.is_fatal(), "{err}");
        assert!(!ParseError::BadBase64.is_fatal());
    }

    #[test]
    fn outbound_messages_have_twilios_shape() {
        let m: serde_json::Value =
            serde_json::from_str(&outbound_media("MZ1", &[0xFF; 160])).unwrap();
        assert_eq!(m["event"], "media");
        assert_eq!(m["streamSid"], "MZ1");
        assert_eq!(
            B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap(),
            vec![0xFF; 160]
        );
        let m: serde_json::Value = serde_json::from_str(&outbound_mark("MZ1", "c1")).unwrap();
        assert_eq!(m["mark"]["name"], "c1");
        let m: serde_json::Value = serde_json::from_str(&outbound_clear("MZ1")).unwrap();
        assert_eq!(m["event"], "clear");
    }
}
