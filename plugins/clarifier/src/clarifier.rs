use callpipe_sdk::host::Host;
use callpipe_sdk::types::{Analysis, Event, Say, StageError, Suggestion, SuggestionKind};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Slots worth asking about, most useful first. The analysis lists what
    /// is missing; the first missing slot here not asked yet is asked.
    pub slots: Vec<String>,
    /// After a question, none other for this long (stream time) unless the
    /// technician has said something new.
    pub backoff_ms: u64,
    /// Words the technician must add since the last question to count as
    /// "something new".
    pub min_new_words: usize,
    /// Slot -> language -> question. Entries here replace the defaults.
    pub questions: BTreeMap<String, BTreeMap<String, String>>,
    /// Also speak the question to the technician (bidirectional calls).
    pub speak: bool,
    /// Word the question with the `llm` capability (the pipeline must grant
    /// it); the template question stays the answer whenever the model is
    /// slow, fails or says something unfit.
    pub llm: bool,
    /// How long the model may take before the template is used.
    pub llm_timeout_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slots: ["equipment", "symptom", "since", "tried"]
                .map(String::from)
                .to_vec(),
            backoff_ms: 10_000,
            min_new_words: 3,
            questions: BTreeMap::new(),
            speak: true,
            llm: false,
            llm_timeout_ms: 1_500,
        }
    }
}

/// The confidence of a question the language model worded (a template
/// question's is 1.0).
const MODEL_WORDED: f32 = 0.5;

/// The card's title; a question the model worded says so, so the agent
/// knows it is not a vetted template.
fn title(language: &str, by_model: bool) -> String {
    let w = crate::builtin::wording(language).or_else(|| crate::builtin::wording("en"));
    match (w, by_model) {
        (Some(w), false) => w.title,
        (Some(w), true) => w.title_by_model,
        (None, _) => "Clarifying question".into(),
    }
}

/// Words that carry content, lower-cased: what "something new" is made of.
fn content_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect()
}

pub struct Clarifier {
    config: Config,
    call_language: String,
    /// Slots already asked in this call.
    asked: Vec<String>,
    /// Stream time of the last question.
    last_question_ms: Option<u64>,
    /// The technician's words when the last question was asked.
    known_words: BTreeSet<String>,
    /// Stream time, from transcripts and the host's ticks.
    now_ms: u64,
    /// The questions asked so far, as worded.
    asked_texts: Vec<String>,
}

impl Clarifier {
    pub fn from_json(json: &str, call_language: &str) -> Result<Self, StageError> {
        Self::with_config(callpipe_sdk::config("clarifier", json)?, call_language)
    }

    /// The stage from its parsed `[stages.config]`.
    pub fn with_config(config: Config, call_language: &str) -> Result<Self, StageError> {
        if config.slots.is_empty() {
            return Err(StageError::InvalidConfig("slots is empty".into()));
        }
        for slot in &config.slots {
            let custom = config.questions.get(slot).is_some_and(|q| !q.is_empty());
            if !custom && crate::builtin::question(slot, "en").is_none() {
                return Err(StageError::InvalidConfig(format!(
                    "slot `{slot}` has no built-in question (equipment, symptom, since, tried): \
                     give one under [stages.config.questions.{slot}]"
                )));
            }
        }
        Ok(Clarifier {
            config,
            call_language: if call_language.is_empty() {
                "fr".into()
            } else {
                call_language.to_string()
            },
            asked: Vec::new(),
            last_question_ms: None,
            known_words: BTreeSet::new(),
            now_ms: 0,
            asked_texts: Vec::new(),
        })
    }

    /// The template question, or the model's wording of it when the
    /// pipeline turned the model on and its answer passes the checks; and
    /// whether the model wrote it.
    fn word<H: Host + ?Sized>(
        &self,
        host: &mut H,
        slot: &str,
        language: &str,
        a: &Analysis,
        template: String,
    ) -> (String, bool) {
        // The model's answer is checked for French or English only; in
        // another language the vetted template is asked.
        if !self.config.llm || !matches!(language, "fr" | "en") {
            return (template, false);
        }
        let request = crate::wording::request(
            slot,
            language,
            a,
            &template,
            &self.asked_texts,
            self.config.llm_timeout_ms,
        );
        let worded = callpipe_sdk::host::ask_model(host, &request, "question", |text| {
            crate::wording::accept(text, language, &self.asked_texts, &a.query)
                .map_err(String::from)
        });
        match worded {
            Some(q) => (q, true),
            None => (template, false),
        }
    }

    /// `handle_with` the host the stage runs in.
    pub fn handle(&mut self, event: Event) -> Vec<Event> {
        self.handle_with(event, &mut callpipe_sdk::host::Wasm)
    }

    pub fn handle_with<H: Host + ?Sized>(&mut self, event: Event, host: &mut H) -> Vec<Event> {
        match event {
            Event::Transcript(t) => {
                self.now_ms = self.now_ms.max(t.end_ms);
                vec![Event::Transcript(t)]
            }
            Event::Custom(c) => {
                if let Some(ms) = callpipe_sdk::tick_of(&c) {
                    self.now_ms = self.now_ms.max(ms);
                }
                vec![Event::Custom(c)]
            }
            Event::Analysis(a) => {
                let mut out = Vec::with_capacity(3);
                let question = self.question_for(&a, host);
                out.push(Event::Analysis(a));
                out.extend(question);
                out
            }
            other => vec![other],
        }
    }

    fn question_for<H: Host + ?Sized>(&mut self, a: &Analysis, host: &mut H) -> Vec<Event> {
        if a.sufficient {
            return Vec::new();
        }
        let Some(slot) = self
            .config
            .slots
            .iter()
            .find(|s| a.missing.contains(s) && !self.asked.contains(s))
            .cloned()
        else {
            return Vec::new();
        };
        let words = content_words(&a.query);
        if let Some(last) = self.last_question_ms {
            let new = words.difference(&self.known_words).count();
            let waited = self.now_ms.saturating_sub(last);
            if new < self.config.min_new_words && waited < self.config.backoff_ms {
                return Vec::new();
            }
        }
        let wanted = if a.language.is_empty() {
            &self.call_language
        } else {
            &a.language
        };
        let language = self.ask_language(&slot, wanted);
        let Some(template) = self.text(&slot, &language) else {
            return Vec::new();
        };
        let (text, by_model) = self.word(host, &slot, &language, a, template);
        self.asked_texts.push(text.clone());
        self.asked.push(slot.clone());
        self.last_question_ms = Some(self.now_ms);
        self.known_words = words;
        let mut out = vec![Event::Suggestion(Suggestion {
            id: format!("question-{slot}"),
            kind: SuggestionKind::ClarificationQuestion,
            title: title(&language, by_model),
            content: text.clone(),
            sources: vec![],
            // A template question is not a guess: it is asked because a slot
            // is empty. The model's wording passed the screen but is still
            // the model's, unchecked against what the caller meant.
            confidence: if by_model { MODEL_WORDED } else { 1.0 },
            language: language.clone(),
        })];
        if self.config.speak {
            out.push(Event::Say(Say {
                text,
                language,
                interrupt: false,
            }));
        }
        out
    }

    /// The language to ask in: the technician's when there is a question
    /// in it (configured or built in), else the call's, else English.
    fn ask_language(&self, slot: &str, wanted: &str) -> String {
        let has = |l: &str| {
            self.config
                .questions
                .get(slot)
                .is_some_and(|q| q.contains_key(l))
                || crate::builtin::question(slot, l).is_some()
        };
        let wanted = crate::builtin::primary(wanted);
        [wanted.as_str(), self.call_language.as_str(), "en"]
            .into_iter()
            .find(|l| has(l))
            .unwrap_or(&wanted)
            .to_string()
    }

    /// The configured question for the language, else the built-in one,
    /// else the configured one in any language.
    fn text(&self, slot: &str, language: &str) -> Option<String> {
        let custom = self.config.questions.get(slot);
        custom
            .and_then(|q| q.get(language))
            .cloned()
            .or_else(|| crate::builtin::question(slot, language))
            .or_else(|| custom.and_then(|q| q.values().next()).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_sdk::llm::LlmError;
    use callpipe_sdk::testing::FakeHost;
    use callpipe_sdk::types::{Custom, SpeakerRole, Track, Transcript};

    fn analysis(query: &str, missing: &[&str], language: &str) -> Event {
        Event::Analysis(Analysis {
            sufficient: false,
            query: query.into(),
            entities: vec![],
            issue: None,
            language: language.into(),
            missing: missing.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn said_at(end_ms: u64) -> Event {
        Event::Transcript(Transcript {
            utterance_id: 1,
            track: Track::Inbound,
            speaker_id: "t".into(),
            role: SpeakerRole::Technician,
            start_ms: end_ms.saturating_sub(1000),
            end_ms,
            text: "x".into(),
            language: "fr".into(),
            confidence: 0.9,
        })
    }

    fn questions(out: &[Event]) -> Vec<(String, String)> {
        out.iter()
            .filter_map(|e| match e {
                Event::Suggestion(s) => Some((s.id.clone(), s.language.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn asks_the_most_useful_missing_slot_in_the_technicians_language() {
        let mut c = Clarifier::from_json("{}", "fr").unwrap();
        let out = c.handle(analysis(
            "hello I have a problem",
            &["equipment", "symptom"],
            "en",
        ));
        assert_eq!(
            questions(&out),
            [("question-equipment".into(), "en".into())]
        );
        assert!(
            matches!(&out[0], Event::Analysis(_)),
            "the analysis passes on first"
        );
        let say = out.iter().find_map(|e| match e {
            Event::Say(s) => Some(s),
            _ => None,
        });
        assert!(say.unwrap().text.starts_with("Which equipment"));
    }

    #[test]
    fn asks_in_any_language_it_has_questions_for_else_in_the_calls() {
        let mut c = Clarifier::from_json("{}", "fr").unwrap();
        let out = c.handle(analysis("hola tengo un problema", &["equipment"], "es"));
        assert_eq!(
            questions(&out),
            [("question-equipment".into(), "es".into())]
        );
        let Some(Event::Suggestion(s)) = out.get(1) else {
            panic!("{out:?}")
        };
        assert!(s.content.starts_with("¿En qué equipo"), "{}", s.content);
        assert_eq!(s.title, "Pregunta de aclaración");
        // A language without questions is asked in the call's.
        let mut c = Clarifier::from_json("{}", "fr").unwrap();
        let out = c.handle(analysis("sawubona", &["equipment"], "zu"));
        assert_eq!(
            questions(&out),
            [("question-equipment".into(), "fr".into())]
        );
        // A configured question in that language comes first.
        let mut c = Clarifier::from_json(
            r#"{"questions": {"equipment": {"zu": "Yimuphi umshini?"}}}"#,
            "fr",
        )
        .unwrap();
        let out = c.handle(analysis("sawubona", &["equipment"], "zu"));
        assert_eq!(
            questions(&out),
            [("question-equipment".into(), "zu".into())]
        );
    }

    #[test]
    fn backs_off_until_something_new_or_time_passes_and_never_repeats() {
        let mut c = Clarifier::from_json(r#"{"backoff_ms": 5000}"#, "fr").unwrap();
        c.handle(said_at(2000));
        let out = c.handle(analysis(
            "bonjour j'ai un souci",
            &["equipment", "symptom"],
            "fr",
        ));
        assert_eq!(questions(&out).len(), 1);
        // "oui" is nothing new, and it is too soon: no question.
        c.handle(said_at(3000));
        let out = c.handle(analysis(
            "bonjour j'ai un souci oui",
            &["equipment", "symptom"],
            "fr",
        ));
        assert!(questions(&out).is_empty());
        // Something new: the next slot (equipment is never asked again).
        c.handle(said_at(4000));
        let out = c.handle(analysis(
            "bonjour j'ai un souci oui la caméra du parking",
            &["symptom", "since"],
            "fr",
        ));
        assert_eq!(questions(&out), [("question-symptom".into(), "fr".into())]);
        // Nothing new, but the back-off time has passed (ticks count).
        c.handle(Event::Custom(Custom {
            name: "callpipe.tick".into(),
            json: r#"{"stream_ms": 9500}"#.into(),
        }));
        let out = c.handle(analysis(
            "bonjour j'ai un souci oui la caméra du parking",
            &["symptom", "since"],
            "fr",
        ));
        assert_eq!(questions(&out), [("question-since".into(), "fr".into())]);
    }

    #[test]
    fn sufficient_context_asks_nothing() {
        let mut c = Clarifier::from_json("{}", "fr").unwrap();
        let Event::Analysis(mut a) = analysis("x", &["since"], "fr") else {
            unreachable!()
        };
        a.sufficient = true;
        assert_eq!(c.handle(Event::Analysis(a)).len(), 1);
    }

    #[test]
    fn config_overrides_and_errors() {
        let mut c = Clarifier::from_json(
            r#"{"slots": ["site"], "speak": false,
                "questions": {"site": {"fr": "Sur quel site êtes-vous ?"}}}"#,
            "fr",
        )
        .unwrap();
        let out = c.handle(analysis("allo", &["site"], "en"));
        // No English text configured: the French one is better than nothing.
        let q = out.iter().find_map(|e| match e {
            Event::Suggestion(s) => Some(s.content.clone()),
            _ => None,
        });
        assert_eq!(q.as_deref(), Some("Sur quel site êtes-vous ?"));
        assert!(!out.iter().any(|e| matches!(e, Event::Say(_))));
        assert!(Clarifier::from_json(r#"{"slots": ["site"]}"#, "fr").is_err());
        assert!(Clarifier::from_json(r#"{"slots": []}"#, "fr").is_err());
        assert!(Clarifier::from_json(r#"{"backof_ms": 1}"#, "fr").is_err());
    }

    fn content(out: &[Event]) -> Option<String> {
        out.iter().find_map(|e| match e {
            Event::Suggestion(s) => Some(s.content.clone()),
            _ => None,
        })
    }

    #[test]
    fn with_the_model_on_its_question_is_asked_and_the_template_otherwise() {
        let on = r#"{"llm": true}"#;
        let mut c = Clarifier::from_json(on, "fr").unwrap();
        let mut host = FakeHost::default()
            .with_completion("La caméra du parking est-elle bien connectée au réseau ?");
        let out = c.handle_with(
            analysis("la caméra du parking", &["symptom"], "fr"),
            &mut host,
        );
        assert!(host.prompts[0].messages[1].content.contains("parking"));
        assert_eq!(
            content(&out).as_deref(),
            Some("La caméra du parking est-elle bien connectée au réseau ?")
        );
        let said = out.iter().find_map(|e| match e {
            Event::Say(s) => Some(s.text.clone()),
            _ => None,
        });
        assert_eq!(said, content(&out), "the spoken question is the same");
        let marked = |out: &[Event]| {
            out.iter().find_map(|e| match e {
                Event::Suggestion(s) => Some((s.title.contains("modèle"), s.confidence)),
                _ => None,
            })
        };
        assert_eq!(
            marked(&out),
            Some((true, MODEL_WORDED)),
            "marked and unsure"
        );

        // Slow, failing or unfit answers: the template, each time, and why.
        let template = crate::builtin::question("symptom", "fr");
        let cases = [
            FakeHost::default().with_llm_error(LlmError::Timeout("1500 ms".into())),
            FakeHost::default().with_llm_error(LlmError::Unavailable("down".into())),
            FakeHost::default().with_completion("The camera is offline."),
            FakeHost::default().with_completion(""),
        ];
        for mut host in cases {
            let mut c = Clarifier::from_json(on, "fr").unwrap();
            let out = c.handle_with(
                analysis("la caméra du parking", &["symptom"], "fr"),
                &mut host,
            );
            assert_eq!(content(&out), template);
            assert_eq!(marked(&out), Some((false, 1.0)));
            assert_eq!(host.warnings(), 1);
        }
        // Off (the default): the model is never asked.
        let mut host = FakeHost::default().with_completion("Une question ?");
        let mut c = Clarifier::from_json("{}", "fr").unwrap();
        let out = c.handle_with(
            analysis("la caméra du parking", &["symptom"], "fr"),
            &mut host,
        );
        assert_eq!(content(&out), template);
        assert!(host.prompts.is_empty(), "asked while off");
    }
}
