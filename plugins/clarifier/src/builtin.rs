//! The built-in questions and card titles: one JSON file per language in
//! `questions/`, compiled into the component. A pipeline's
//! `[stages.config.questions]` replaces any of them; a language with no file
//! is asked in the call's language (see `Clarifier::ask_language`).

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wording {
    /// The card's title for a template question.
    pub title: String,
    /// The card's title for a question the language model worded.
    pub title_by_model: String,
    /// Slot -> question.
    pub questions: BTreeMap<String, String>,
}

const FILES: &[(&str, &str)] = &[
    ("ar", include_str!("../questions/ar.json")),
    ("de", include_str!("../questions/de.json")),
    ("en", include_str!("../questions/en.json")),
    ("es", include_str!("../questions/es.json")),
    ("fr", include_str!("../questions/fr.json")),
    ("it", include_str!("../questions/it.json")),
    ("ja", include_str!("../questions/ja.json")),
    ("nl", include_str!("../questions/nl.json")),
    ("pl", include_str!("../questions/pl.json")),
    ("pt", include_str!("../questions/pt.json")),
    ("ro", include_str!("../questions/ro.json")),
    ("ru", include_str!("../questions/ru.json")),
    ("tr", include_str!("../questions/tr.json")),
    ("vi", include_str!("../questions/vi.json")),
    ("zh", include_str!("../questions/zh.json")),
];

pub use callpipe_sdk::language::primary;

/// The built-in wording for a language (by its primary subtag), if any.
/// Parsed when asked: a call asks a few questions at most.
pub fn wording(language: &str) -> Option<Wording> {
    let tag = primary(language);
    let (_, json) = FILES.iter().find(|(l, _)| *l == tag)?;
    // The files are checked by this module's tests; a broken one would
    // fail them, never a call.
    serde_json::from_str(json).ok()
}

/// The built-in question for a slot in a language.
pub fn question(slot: &str, language: &str) -> Option<String> {
    wording(language)?.questions.remove(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots every file words.
    const SLOTS: [&str; 4] = ["equipment", "symptom", "since", "tried"];

    #[test]
    fn every_language_words_every_slot_as_a_question() {
        for (language, json) in FILES {
            let w: Wording = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("questions/{language}.json: {e}"));
            let slots: Vec<&str> = w.questions.keys().map(String::as_str).collect();
            let mut want = SLOTS.to_vec();
            want.sort();
            assert_eq!(slots, want, "questions/{language}.json");
            for (slot, q) in &w.questions {
                assert!(
                    q.trim_end().ends_with(['?', '？', '؟']),
                    "questions/{language}.json {slot}: {q}"
                );
            }
            assert!(!w.title.is_empty() && w.title_by_model.starts_with(&w.title));
        }
        assert_eq!(FILES.len(), 15);
    }

    #[test]
    fn a_region_subtag_finds_its_language() {
        assert!(question("since", "pt-BR").is_some_and(|q| q.starts_with("Desde")));
        assert!(question("since", "xx").is_none());
        assert!(question("nothing", "fr").is_none());
    }
}
