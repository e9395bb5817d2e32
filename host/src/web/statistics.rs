//! A call's end-of-call statistics, as the original dashboard shows them
//! (`/api/sessions/{id}` and `/twilio/call-status/{sid}` both carry them).

use crate::sessions::Session;
use serde_json::{Value, json};

/// How long the call has lasted: from the technician's answer (the first
/// `in-progress`) to its end, as the dashboard's timer counts; from the
/// session's creation when it was never answered.
fn call_duration(s: &Session) -> u64 {
    let Some(answered) = s
        .history
        .iter()
        .find(|h| h.status == "in-progress")
        .map(|h| h.at)
    else {
        return s.duration_secs();
    };
    let end = s
        .history
        .iter()
        .rev()
        .find(|h| crate::sessions::is_terminal(&h.status))
        .map_or_else(crate::sessions::now_epoch, |h| h.at);
    (end - answered).max(0.0) as u64
}

/// The end-of-call statistics the original dashboard shows.
pub fn of(s: &Session) -> Value {
    let technician_segments: u64 = s
        .speakers
        .values()
        .filter(|x| x.speaker_role == "technician")
        .map(|x| x.segment_count)
        .sum();
    let solutions = s
        .suggestions
        .iter()
        .filter(|x| x.kind == "knowledge_base")
        .count();
    json!({
        "duration": call_duration(s),
        "segments": s.total_segments,
        "technician_segments": technician_segments,
        "solutions_provided": solutions,
        "questions_asked": s.suggestions.len() - solutions,
    })
}
