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
    /// The line in the agent's language, when a stage translated it (the
    /// `translator` stage, with a language model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<Translation>,
}

/// A transcript line translated for the agent; always a model's words.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Translation {
    pub language: String,
    pub text: String,
}

/// Which line a translation belongs to, and the translation: a session's
/// `translation` event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LineTranslation {
    pub speaker_role: String,
    pub start_ms: u64,
    /// The line as transcribed (with role and start, it names the line).
    pub original: String,
    pub language: String,
    pub text: String,
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
    /// Mostly the language model's words (the host decides; the dashboard
    /// says so). Older records and the original system's have none.
    #[serde(default)]
    pub model_written: bool,
}
