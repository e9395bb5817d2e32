use crate::lexicon;
use crate::text::{first_position, normalize, words};
use callpipe_sdk::types::{Analysis, Event, SpeakerRole, StageError, Transcript};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// More words than this: sufficient on their own (original rule: 30).
    pub sufficient_words: usize,
    /// More words than this and an entity or an issue: sufficient (15).
    pub entity_or_issue_words: usize,
    /// More words than this and an issue: sufficient (10).
    pub issue_words: usize,
    /// Roles whose words make the query (the technician's).
    pub query_roles: Vec<String>,
    /// Equipment: canonical name -> spellings (replaces the default lexicon).
    pub entities: BTreeMap<String, Vec<String>>,
    /// Phrases that describe a fault.
    pub issues: Vec<String>,
    /// Phrases that say since when.
    pub since: Vec<String>,
    /// Phrases that say what was already tried.
    pub tried: Vec<String>,
    /// Characters of accumulated text kept for the query (the newest).
    pub max_query_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sufficient_words: 30,
            entity_or_issue_words: 15,
            issue_words: 10,
            query_roles: vec!["technician".into()],
            entities: lexicon::entities(),
            issues: lexicon::issues(),
            since: lexicon::since(),
            tried: lexicon::tried(),
            max_query_chars: 1000,
        }
    }
}

/// A lexicon entry with its spellings already normalised into words.
struct Phrases(Vec<(String, Vec<Vec<String>>)>);

impl Phrases {
    fn new<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Vec<String>)>) -> Self {
        Phrases(
            entries
                .into_iter()
                .map(|(name, spellings)| {
                    let split = spellings
                        .iter()
                        .map(|s| words(&normalize(s)).iter().map(|w| w.to_string()).collect())
                        .filter(|w: &Vec<String>| !w.is_empty())
                        .collect();
                    (name.clone(), split)
                })
                .collect(),
        )
    }

    /// Names whose spellings occur in `text_words`, first mentioned first.
    fn found(&self, text_words: &[&str]) -> Vec<String> {
        let mut hits: Vec<(usize, &String)> = self
            .0
            .iter()
            .filter_map(|(name, spellings)| {
                spellings
                    .iter()
                    .filter_map(|s| {
                        let s: Vec<&str> = s.iter().map(String::as_str).collect();
                        first_position(text_words, &s)
                    })
                    .min()
                    .map(|at| (at, name))
            })
            .collect();
        hits.sort();
        hits.into_iter().map(|(_, name)| name.clone()).collect()
    }
}

fn single(list: &[String]) -> Phrases {
    Phrases(
        list.iter()
            .map(|p| {
                let w: Vec<String> = words(&normalize(p)).iter().map(|w| w.to_string()).collect();
                (p.clone(), vec![w])
            })
            .filter(|(_, w)| !w[0].is_empty())
            .collect(),
    )
}

pub struct Analyzer {
    config: Config,
    call_language: String,
    query_roles: Vec<SpeakerRole>,
    entities: Phrases,
    issues: Phrases,
    since: Phrases,
    tried: Phrases,
    /// The query roles' words so far, in order.
    said: String,
}

impl Analyzer {
    pub fn from_json(json: &str, call_language: &str) -> Result<Self, StageError> {
        Self::with_config(
            callpipe_sdk::config("context-analyzer", json)?,
            call_language,
        )
    }

    /// The stage from its parsed `[stages.config]`.
    pub fn with_config(config: Config, call_language: &str) -> Result<Self, StageError> {
        let mut query_roles = Vec::new();
        for r in &config.query_roles {
            query_roles.push(callpipe_sdk::role_of(r).ok_or_else(|| {
                StageError::InvalidConfig(format!(
                    "unknown role `{r}` in query_roles (technician, agent, unknown)"
                ))
            })?);
        }
        if config.entities.is_empty() {
            return Err(StageError::InvalidConfig("entities is empty".into()));
        }
        Ok(Analyzer {
            entities: Phrases::new(&config.entities),
            issues: single(&config.issues),
            since: single(&config.since),
            tried: single(&config.tried),
            call_language: if call_language.is_empty() {
                "fr".into()
            } else {
                call_language.to_string()
            },
            query_roles,
            said: String::new(),
            config,
        })
    }

    pub fn handle(&mut self, event: Event) -> Vec<Event> {
        match event {
            Event::Transcript(t) => {
                let mut out = Vec::with_capacity(2);
                if self.query_roles.contains(&t.role) {
                    let analysis = self.add(&t);
                    out.push(Event::Transcript(t));
                    out.push(Event::Analysis(analysis));
                } else {
                    // Agent lines are shown, never searched.
                    out.push(Event::Transcript(t));
                }
                out
            }
            other => vec![other],
        }
    }

    fn add(&mut self, t: &Transcript) -> Analysis {
        let text = t.text.trim();
        if !text.is_empty() {
            if !self.said.is_empty() {
                self.said.push(' ');
            }
            self.said.push_str(text);
        }
        if self.said.chars().count() > self.config.max_query_chars {
            let skip = self.said.chars().count() - self.config.max_query_chars;
            self.said = self.said.chars().skip(skip).collect();
        }
        self.analyse(&t.language)
    }

    /// The rules over everything the technician has said so far.
    fn analyse(&self, transcript_language: &str) -> Analysis {
        let norm = normalize(&self.said);
        let w = words(&norm);
        // Counted as the original did, `len(text.split())`: "s'enregistre"
        // is one word, not two.
        let n = self.said.split_whitespace().count();
        let entities = self.entities.found(&w);
        let issues = self.issues.found(&w);
        let c = &self.config;
        let has_entity = !entities.is_empty();
        let has_issue = !issues.is_empty();
        let sufficient = n > c.sufficient_words
            || (n > c.entity_or_issue_words && (has_entity || has_issue))
            || (n > c.issue_words && has_issue);
        let mut missing = Vec::new();
        if !has_entity {
            missing.push("equipment".to_string());
        }
        if !has_issue {
            missing.push("symptom".to_string());
        }
        if self.since.found(&w).is_empty() {
            missing.push("since".to_string());
        }
        if self.tried.found(&w).is_empty() {
            missing.push("tried".to_string());
        }
        Analysis {
            sufficient,
            query: self.said.clone(),
            entities,
            issue: issues.into_iter().next(),
            language: self.language(&w, transcript_language),
            missing,
        }
    }

    /// The language the technician speaks. French or English by function
    /// words; a transcript the transcriber tagged with another language
    /// (it detected it) keeps that tag, since a few function words are
    /// shared (Spanish "de", "la", "que"); ties go to the transcriber's tag,
    /// then the call's language.
    fn language(&self, w: &[&str], transcript_language: &str) -> String {
        let tagged = callpipe_sdk::language::primary(transcript_language);
        if !tagged.is_empty() && tagged != "fr" && tagged != "en" {
            return tagged;
        }
        let fr = w.iter().filter(|x| lexicon::FRENCH.contains(x)).count();
        let en = w.iter().filter(|x| lexicon::ENGLISH.contains(x)).count();
        if fr > en {
            "fr".into()
        } else if en > fr {
            "en".into()
        } else if !tagged.is_empty() {
            tagged
        } else {
            self.call_language.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_sdk::types::Track;

    fn said(role: SpeakerRole, text: &str) -> Event {
        Event::Transcript(Transcript {
            utterance_id: 1,
            track: if role == SpeakerRole::Agent {
                Track::Outbound
            } else {
                Track::Inbound
            },
            speaker_id: "s".into(),
            role,
            start_ms: 0,
            end_ms: 1000,
            text: text.into(),
            language: "fr".into(),
            confidence: 0.9,
        })
    }

    fn analysis(a: &mut Analyzer, role: SpeakerRole, text: &str) -> Option<Analysis> {
        a.handle(said(role, text))
            .into_iter()
            .find_map(|e| match e {
                Event::Analysis(x) => Some(x),
                _ => None,
            })
    }

    fn stage() -> Analyzer {
        Analyzer::from_json("{}", "fr").unwrap()
    }

    #[test]
    fn a_vague_opening_is_not_enough() {
        let mut a = stage();
        let x = analysis(
            &mut a,
            SpeakerRole::Technician,
            "Bonjour, j'ai un souci sur le site.",
        )
        .unwrap();
        assert!(!x.sufficient);
        assert_eq!(x.language, "fr");
        assert_eq!(x.missing, ["equipment", "symptom", "since", "tried"]);
    }

    #[test]
    fn the_original_rules_apply() {
        // > 10 words and an issue.
        let mut a = stage();
        let x = analysis(
            &mut a,
            SpeakerRole::Technician,
            "alors voilà la chose elle ne fonctionne plus du tout ici",
        )
        .unwrap();
        assert!(x.sufficient, "{x:?}");
        assert_eq!(x.issue.as_deref(), Some("ne fonctionne plus"));
        // An entity alone needs > 15 words.
        let mut a = stage();
        let x = analysis(
            &mut a,
            SpeakerRole::Technician,
            "je suis devant la caméra du parking",
        )
        .unwrap();
        assert!(!x.sufficient);
        assert_eq!(x.entities, ["camera"]);
        let x = analysis(
            &mut a,
            SpeakerRole::Technician,
            "avec le client et on regarde ensemble ce qui se passe",
        )
        .unwrap();
        assert!(x.sufficient, "{x:?}");
        // Over 30 words is enough on its own.
        let mut a = stage();
        let long = "bonjour ".repeat(31);
        assert!(
            analysis(&mut a, SpeakerRole::Technician, &long)
                .unwrap()
                .sufficient
        );
    }

    #[test]
    fn speech_recognition_spellings_are_entities() {
        let mut a = stage();
        let x = analysis(
            &mut a,
            SpeakerRole::Technician,
            "le haine vé erre bipe et la ventousse lâche",
        )
        .unwrap();
        assert_eq!(x.entities, ["nvr", "maglock"]);
        assert_eq!(x.issue.as_deref(), Some("bipe"));
        assert!(!x.missing.contains(&"equipment".to_string()));
    }

    #[test]
    fn agent_lines_are_never_query_text() {
        let mut a = stage();
        assert!(analysis(&mut a, SpeakerRole::Agent, "vous parlez du switch PoE ?").is_none());
        let x = analysis(&mut a, SpeakerRole::Technician, "non, la caméra").unwrap();
        assert_eq!(x.query, "non, la caméra");
        assert_eq!(x.entities, ["camera"]);
    }

    #[test]
    fn a_language_the_transcriber_detected_is_kept() {
        let mut a = stage();
        let mut t = said(SpeakerRole::Technician, "la cámara de la entrada no graba");
        if let Event::Transcript(t) = &mut t {
            t.language = "es".into();
        }
        let x = a
            .handle(t)
            .into_iter()
            .find_map(|e| match e {
                Event::Analysis(x) => Some(x),
                _ => None,
            })
            .unwrap();
        assert_eq!(x.language, "es", "not French for its shared words");
    }

    #[test]
    fn english_is_detected_and_slots_fill() {
        let mut a = stage();
        let x = analysis(
            &mut a,
            SpeakerRole::Technician,
            "The recorder is offline since this morning and I restarted the switch",
        )
        .unwrap();
        assert_eq!(x.language, "en");
        assert!(x.missing.is_empty(), "{x:?}");
        assert!(x.entities.contains(&"nvr".to_string()));
    }

    /// The original system's own examples, with what it decided.
    #[test]
    fn the_original_examples_decide_as_the_original() {
        // (text, word count as `len(text.split())`, sufficient, issue found, entities)
        let table: &[(&str, usize, bool, bool, &[&str])] = &[
            (
                "Ma caméra ne s'enregistre pas depuis hier",
                7,
                false,
                true,
                &["camera"],
            ),
            ("J'ai un problème", 3, false, false, &[]),
            ("Bonjour, j'ai un souci sur le site.", 7, false, false, &[]),
            (
                "Le flux de la caméra ne fonctionne plus depuis ce matin sur l'enregistreur",
                13,
                true,
                true,
                &["stream", "camera", "nvr"],
            ),
            (
                "Le réseau du site est coupé depuis l'orage d'hier soir et rien ne marche",
                14,
                true,
                true,
                &["network"],
            ),
            (
                "Le client m'appelle parce qu'il a un souci avec le réseau et le flux vidéo au bureau",
                17,
                true,
                false,
                &["network", "stream"],
            ),
        ];
        for (text, count, sufficient, issue, entities) in table {
            let mut a = stage();
            assert_eq!(text.split_whitespace().count(), *count, "{text}");
            let x = analysis(&mut a, SpeakerRole::Technician, text).unwrap();
            assert_eq!(x.sufficient, *sufficient, "{text}: {x:?}");
            assert_eq!(x.issue.is_some(), *issue, "{text}: {x:?}");
            assert_eq!(x.entities, *entities, "{text}");
        }
    }

    #[test]
    fn an_apostrophe_does_not_split_a_word() {
        // 10 words by `split()`, with an issue: not enough (the rule is
        // more than 10). Split at apostrophes it would be 14, and enough.
        let mut a = stage();
        let ten = "depuis hier l'écran noir s'affiche, c'est l'enregistreur qu'on voit plus";
        assert_eq!(ten.split_whitespace().count(), 10);
        let x = analysis(&mut a, SpeakerRole::Technician, ten).unwrap();
        assert!(x.issue.is_some(), "{x:?}");
        assert!(!x.sufficient, "10 words by the original's count: {x:?}");
    }

    #[test]
    fn config_overrides_and_errors() {
        let a = Analyzer::from_json(r#"{"issue_words": 3, "entities": {"tv": ["télé"]}}"#, "fr");
        let mut a = a.unwrap();
        let x = analysis(&mut a, SpeakerRole::Technician, "la télé est en panne ici").unwrap();
        assert!(x.sufficient);
        assert_eq!(x.entities, ["tv"]);
        assert!(Analyzer::from_json(r#"{"query_roles": ["boss"]}"#, "fr").is_err());
        assert!(Analyzer::from_json(r#"{"sufficent_words": 3}"#, "fr").is_err());
        assert!(Analyzer::from_json(r#"{"entities": {}}"#, "fr").is_err());
    }
}
