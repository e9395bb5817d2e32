//! The call's language when the transcriber is set to detect it.
//!
//! Whisper names a language for each utterance, with a probability. The
//! first detection that is sure (probability at least [`SURE`], at least
//! [`MIN_WORDS`] words) becomes the call's language; until then a transcript
//! carries no language (the stages fall back to the pipeline's). Once the
//! call has a language, utterances are transcribed in it without detecting,
//! which saves whisper a second encoder pass, except once every
//! [`CHECK_EVERY`] utterances in it and any utterance whisper was unsure of
//! (mean token probability under [`DOUBTFUL`]): those are detected again.
//! A call switches when two detections in a row are sure of the same other
//! language, so one misheard utterance never switches it.

/// A detection at least this probable counts.
pub const SURE: f32 = 0.8;
/// Fewer words say too little about their language.
pub const MIN_WORDS: usize = 3;
/// Utterances transcribed in the call's language between two checks: a
/// check costs a second encoder pass (+75% CPU on that utterance, measured),
/// so every ninth keeps the call's average near 10% while a switch the
/// unsure-transcript rule misses is still caught within a minute or so.
pub const CHECK_EVERY: u32 = 8;
/// Mean token probability under which an utterance is checked again (speech
/// in another language, decoded as the call's, comes out unsure).
pub const DOUBTFUL: f32 = 0.5;

#[derive(Debug, Default, Clone)]
pub struct CallLanguage {
    settled: Option<String>,
    /// Sure of another language once; a second time switches.
    challenger: Option<String>,
    /// Utterances transcribed in the settled language since the last check.
    since_check: u32,
    /// The last transcript was unsure: check the next one.
    doubt: bool,
}

impl CallLanguage {
    /// The language to transcribe the next utterance in, or `None` to
    /// detect it.
    pub fn next(&self) -> Option<&str> {
        if self.challenger.is_some() || self.doubt || self.since_check >= CHECK_EVERY {
            return None;
        }
        self.settled.as_deref()
    }

    /// The call's language so far (`None` until a detection was sure).
    pub fn settled(&self) -> Option<&str> {
        self.settled.as_deref()
    }

    /// Takes in one utterance's transcription and returns the language its
    /// transcript carries: the call's, or empty while there is none.
    /// `detected` is the language whisper named with its probability, or
    /// `None` when the utterance was transcribed in the call's language.
    pub fn observe(
        &mut self,
        detected: Option<(&str, Option<f32>)>,
        words: usize,
        confidence: f32,
    ) -> String {
        match detected {
            None => {
                self.since_check += 1;
                self.doubt = confidence < DOUBTFUL;
            }
            Some((language, probability)) => {
                self.since_check = 0;
                self.doubt = false;
                // A backend that names no probability counts as sure: the
                // word count and the second detection still guard a switch.
                let sure = probability.unwrap_or(1.0) >= SURE && words >= MIN_WORDS;
                let language = primary(language);
                match &self.settled {
                    // Not sure: no evidence either way, and "two in a row"
                    // starts again.
                    _ if !sure => self.challenger = None,
                    None => self.settled = Some(language),
                    Some(current) if *current == language => self.challenger = None,
                    Some(_) => {
                        if self.challenger.as_deref() == Some(&language) {
                            tracing::info!(from = ?self.settled, to = %language, "the call switched language");
                            self.settled = Some(language);
                            self.challenger = None;
                        } else {
                            self.challenger = Some(language);
                        }
                    }
                }
            }
        }
        self.settled.clone().unwrap_or_default()
    }
}

/// Words in a transcript, for [`MIN_WORDS`]: Chinese and Japanese write
/// none of the spaces this counts, so two of their characters count as one.
pub fn words(text: &str) -> usize {
    let unspaced = text
        .chars()
        .filter(|c| matches!(*c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF))
        .count();
    text.split_whitespace().count().max(unspaced / 2)
}

/// `pt-BR` -> `pt`: stages, Whisper and voices go by the primary subtag.
pub fn primary(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sure_detection_becomes_the_calls_language() {
        let mut c = CallLanguage::default();
        assert_eq!(c.next(), None, "detect until there is a language");
        assert_eq!(c.observe(Some(("es", Some(0.55))), 6, 0.8), "", "unsure");
        assert_eq!(c.observe(Some(("es", Some(0.95))), 2, 0.8), "", "two words");
        assert_eq!(c.observe(Some(("es", Some(0.95))), 5, 0.8), "es");
        assert_eq!(c.next(), Some("es"), "then transcribed without detecting");
    }

    #[test]
    fn a_settled_call_is_checked_every_few_utterances_and_when_unsure() {
        let mut c = CallLanguage::default();
        c.observe(Some(("de", Some(0.9))), 5, 0.8);
        for _ in 0..CHECK_EVERY {
            assert_eq!(c.next(), Some("de"));
            assert_eq!(c.observe(None, 5, 0.8), "de");
        }
        assert_eq!(c.next(), None, "a periodic check");
        c.observe(Some(("de", Some(0.9))), 5, 0.8);
        assert_eq!(c.next(), Some("de"));
        c.observe(None, 5, 0.3);
        assert_eq!(c.next(), None, "an unsure transcript is checked");
    }

    #[test]
    fn a_call_switches_on_two_sure_detections_in_a_row_only() {
        let mut c = CallLanguage::default();
        c.observe(Some(("fr", Some(0.9))), 5, 0.8);
        assert_eq!(c.observe(Some(("en", Some(0.9))), 5, 0.8), "fr", "once");
        assert_eq!(c.next(), None, "the next one is detected too");
        assert_eq!(c.observe(Some(("fr", Some(0.9))), 5, 0.8), "fr");
        assert_eq!(c.next(), Some("fr"), "the challenger is gone");
        c.observe(Some(("en", Some(0.9))), 5, 0.8);
        assert_eq!(c.observe(Some(("en-GB", Some(0.85))), 4, 0.8), "en");
        assert_eq!(c.next(), Some("en"));
    }

    #[test]
    fn an_unsure_detection_between_two_sure_ones_breaks_the_row() {
        let mut c = CallLanguage::default();
        c.observe(Some(("fr", Some(0.9))), 5, 0.8);
        c.observe(Some(("en", Some(0.9))), 5, 0.8);
        c.observe(Some(("en", Some(0.3))), 5, 0.8);
        assert_eq!(c.observe(Some(("en", Some(0.9))), 5, 0.8), "fr");
        assert_eq!(c.observe(Some(("en", Some(0.9))), 5, 0.8), "en");
    }

    #[test]
    fn chinese_and_japanese_count_without_spaces() {
        assert_eq!(words("the camera is off"), 4);
        assert_eq!(words("门禁卡在读卡器上一刷就亮红灯"), 7);
        assert_eq!(words("カメラが映りません"), 4);
    }

    #[test]
    fn a_backend_without_probabilities_still_needs_words() {
        let mut c = CallLanguage::default();
        assert_eq!(c.observe(Some(("it", None)), 1, 0.8), "");
        assert_eq!(c.observe(Some(("it", None)), 4, 0.8), "it");
    }
}
