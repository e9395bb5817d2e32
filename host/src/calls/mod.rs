//! Call orchestration: a Twilio media stream's session loop, what a call's
//! pipeline produces (into the session, spoken, played), chat sessions on
//! the text path, and the registry of calls in progress. Below the web
//! layer, above the pipeline runtime and the Twilio protocol.

pub mod chat;
pub mod greeting;
pub mod lateness;
pub mod live;
pub mod media_stream;
pub mod output;
