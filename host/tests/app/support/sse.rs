//! Server-Sent Events as a test client reads them.

use serde_json::Value;

/// A parsed Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

/// Takes the complete events at the front of `buf` (what has arrived of
/// a stream), leaving a partial one for the next chunk; comments and
/// keep-alives (blocks without an event name) are dropped, and so are
/// `diagnostic` events: live hints for the dashboard, without an id and
/// never stored, while these tests read the stored stream (the browser
/// tests cover the Diagnostic block).
pub fn take_events(buf: &mut String) -> Vec<Sse> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !event.is_empty() && event != "diagnostic" {
            out.push(Sse {
                id,
                event,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            });
        }
    }
    out
}
