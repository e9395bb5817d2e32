//! What a session's record is made of, as stored and as the API shows it.

use serde::{Deserialize, Serialize};

/// What a speaker said, as the pipeline's transcriber heard it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TranscriptLine {
    pub speaker_id: String,
    pub speaker_role: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    pub language: String,
    pub confidence: f32,
}

/// A suggestion as the dashboard shows it: an article or a question.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuggestionRecord {
    /// Stable: the dashboard de-duplicates on it.
    pub id: String,
    /// `knowledge_base` or `clarification_question`, as the original system.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub content: String,
    pub sources: Vec<String>,
    pub confidence: f32,
    pub language: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
}
