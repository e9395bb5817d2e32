//! Which suggestions carry the language model's words.
//!
//! The host, not the stage, decides: it hears every reply the `llm`
//! capability hands a stage while that stage handles an event, and marks a
//! suggestion the stage returns as model-written when most of its words
//! come from those replies. A stage cannot forget the mark or leave it off,
//! so the dashboard can always tell the agent which text a model wrote
//! (and, through the transcript in its prompt, which text a caller could
//! have steered). A stage that only used the model to search (a rewritten
//! query) returns article text, which the replies do not cover: unmarked.
//! A mark stays with the suggestion when a later stage passes it on.

use crate::bindings::types::Event;
use std::collections::HashSet;

/// Share of a suggestion's word triples found in the model's replies from
/// which it counts as model-written: a stage trims, re-punctuates or adds a
/// word around the model's sentence, it does not rewrite half of it.
const COVERED: f32 = 0.5;

/// The text a stage received from the model while handling one event.
#[derive(Debug, Default)]
pub struct ModelReplies {
    replies: Vec<String>,
}

impl ModelReplies {
    pub fn push(&mut self, text: &str) {
        self.replies.push(text.to_owned());
    }

    pub fn clear(&mut self) {
        self.replies.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The replies' word triples, built once per event however many
    /// suggestions the stage returns.
    pub fn said(&self) -> Said {
        let mut said = HashSet::new();
        for reply in &self.replies {
            for s in strings_of(reply) {
                said.extend(triples(tokens(&s)));
            }
        }
        Said(said)
    }

    /// Whether `text` is mostly the model's words.
    pub fn wrote(&self, text: &str) -> bool {
        self.said().covers(text)
    }
}

/// What the model said during one event, as word triples.
pub struct Said(HashSet<[String; 3]>);

impl Said {
    /// Whether `text` is mostly these words.
    pub fn covers(&self, text: &str) -> bool {
        let own = triples(tokens(text));
        if own.is_empty() || self.0.is_empty() {
            return false;
        }
        let covered = own.iter().filter(|t| self.0.contains(*t)).count();
        covered as f32 >= COVERED * own.len() as f32
    }
}

/// Whether `output` is `input` passed on (same suggestion id): it keeps
/// the input's mark.
pub fn same_suggestion(input: &Event, output: &Event) -> bool {
    matches!((input, output), (Event::Suggestion(a), Event::Suggestion(b)) if a.id == b.id)
}

/// Whether `event` is a suggestion whose content is mostly the model's
/// words. Not the title: a stage's label, and an article's title is what a
/// model's rewritten query or answer naturally repeats.
pub fn model_wrote(said: &Said, event: &Event) -> bool {
    match event {
        Event::Suggestion(s) => said.covers(&s.content),
        _ => false,
    }
}

/// A reply's text, or the strings of a structured (JSON) reply, whose
/// escapes (`\"`, `\u00e9`) would otherwise hide its words.
fn strings_of(reply: &str) -> Vec<String> {
    fn collect(v: serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.into_iter().for_each(|v| collect(v, out)),
            serde_json::Value::Object(o) => o.into_iter().for_each(|(_, v)| collect(v, out)),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(reply) {
        Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            let mut out = Vec::new();
            collect(v, &mut out);
            out
        }
        _ => vec![reply.to_owned()],
    }
}

/// Lowercased words; a character of a script written without spaces
/// (Chinese, Japanese, Korean syllables) is a word of its own.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if is_unspaced(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // kana
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
    )
}

/// Consecutive word triples; a text of one or two words is one "triple"
/// padded with empty words, so a short reply still counts.
fn triples(words: Vec<String>) -> HashSet<[String; 3]> {
    let mut words = words.into_iter();
    match words.len() {
        0 => HashSet::new(),
        1 | 2 => {
            let a = words.next().unwrap_or_default();
            let b = words.next().unwrap_or_default();
            HashSet::from([[a, b, String::new()]])
        }
        _ => {
            let w: Vec<String> = words.collect();
            w.windows(3)
                .map(|t| [t[0].clone(), t[1].clone(), t[2].clone()])
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(texts: &[&str]) -> ModelReplies {
        let mut r = ModelReplies::default();
        texts.iter().for_each(|t| r.push(t));
        r
    }

    #[test]
    fn a_question_the_model_worded_is_marked_even_trimmed_and_titled() {
        let r = replies(&[
            r#"{"question": "Quel modèle d\u00e9j\u00e0 install\u00e9 clignote en rouge ?"}"#,
        ]);
        assert!(r.wrote("Quel modèle déjà installé clignote en rouge?"));
        let r = replies(&["  Which recorder model is it, and since when?  "]);
        assert!(r.wrote("Which recorder model is it, and since when? Thanks."));
    }

    #[test]
    fn article_text_after_a_rewritten_query_is_not_marked() {
        let r = replies(&["NVR hard disk not detected after power cut"]);
        let article = "Disque dur non détecté\nVérifiez le câble SATA et l'alimentation du disque. \
                       Si le disque n'apparaît toujours pas dans le BIOS de l'enregistreur, remplacez-le.";
        assert!(!r.wrote(article));
        assert!(!ModelReplies::default().wrote("anything at all here"));
    }

    #[test]
    fn an_article_card_whose_title_the_query_repeats_is_not_marked() {
        use crate::bindings::types::{Suggestion, SuggestionKind};
        let card = |title: &str, content: &str| {
            Event::Suggestion(Suggestion {
                id: "kb-1".into(),
                kind: SuggestionKind::KnowledgeBase,
                title: title.into(),
                content: content.into(),
                sources: vec![],
                confidence: 0.8,
                language: "fr".into(),
            })
        };
        let r = replies(&[
            "caméra parking éteinte après remplacement du switch PoE, ne répond plus au ping",
            "1. Vérifiez l'alimentation PoE du port [sample-001].\n2. Redémarrez la caméra.",
        ]);
        let title = "Caméra éteinte après remplacement du switch PoE";
        assert!(!model_wrote(
            &r.said(),
            &card(
                title,
                "1. Vérifier que le nouveau switch fournit bien du PoE sur ce port."
            )
        ));
        assert!(model_wrote(
            &r.said(),
            &card(
                title,
                "1. Vérifiez l'alimentation PoE du port [sample-001].\n2. Redémarrez la caméra."
            )
        ));
    }

    #[test]
    fn scripts_without_spaces_compare_by_character() {
        let r = replies(&["录像机的硬盘从什么时候开始无法识别？"]);
        assert!(r.wrote("录像机的硬盘从什么时候开始无法识别?"));
        assert!(!r.wrote("检查电源适配器和网线连接是否正常"));
    }
}
