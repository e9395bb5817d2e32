//! What the assistant says first: the pipeline's `[pipeline.greetings]`
//! for the call's language, else the built-in French or (for any other
//! language) English line.

use crate::pipeline::model::Greetings;
use std::collections::BTreeMap;

/// The spoken greeting for `language` (its primary subtag), said by Twilio
/// before the stream starts.
pub fn call(greetings: &Greetings, language: &str) -> String {
    pick(
        &greetings.call,
        language,
        "Bonjour, vous êtes en ligne avec le support technique. Décrivez-nous le problème.",
        "Hello, you are connected to technical support. Please describe the problem.",
    )
}

/// The chat's opening line for `language`; the original's by default.
pub fn chat(greetings: &Greetings, language: &str) -> String {
    pick(
        &greetings.chat,
        language,
        "Bonjour ! Quel est le problème rencontré ?",
        "Hello! What is the problem?",
    )
}

fn pick(configured: &BTreeMap<String, String>, language: &str, fr: &str, en: &str) -> String {
    let l = language.split(['-', '_']).next().unwrap_or("");
    configured
        .get(l)
        .cloned()
        .unwrap_or_else(|| if l == "fr" { fr } else { en }.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_line_wins_for_its_language_and_the_built_in_one_for_others() {
        let mut g = Greetings::default();
        g.call.insert("fr".into(), "Allô, ici Acme.".into());
        assert_eq!(call(&g, "fr-CA"), "Allô, ici Acme.");
        assert!(call(&g, "en-US").starts_with("Hello"));
        assert!(call(&g, "de").starts_with("Hello"));
        assert_eq!(chat(&g, "fr"), "Bonjour ! Quel est le problème rencontré ?");
    }
}
