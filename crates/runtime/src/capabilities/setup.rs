//! A pipeline's `[capabilities.*]` sections into backends: each section goes
//! to the factor of that name (see `factor`), which parses its typed
//! settings and builds its backend. A section that fails is reported by
//! name and the others are still built, so `callpipe check` shows every
//! problem at once.

use super::CapabilitySet;
use super::factor::Factors;
pub use super::factor::Setup;

/// A section that could not be set up.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionError {
    /// `transcriber`, `knowledge`, `speech`, or the unknown name given.
    pub section: String,
    pub message: String,
}

impl CapabilitySet {
    /// Builds the backend of every section, `(name, table)`.
    pub async fn from_sections<T: 'static>(
        factors: &Factors<T>,
        sections: &[(&str, &toml::Table)],
        setup: Setup<'_>,
    ) -> (CapabilitySet, Vec<SectionError>) {
        let mut set = CapabilitySet::default();
        let mut errors = Vec::new();
        // In the list's order (a knowledge store before the model that may
        // use it, say); unknown names last.
        let position = |name: &str| factors.iter().position(|f| f.name() == name);
        let mut sections = sections.to_vec();
        sections.sort_by_key(|&(name, _)| position(name).unwrap_or(usize::MAX));
        for (name, table) in sections {
            let built = match factors.get(name) {
                Some(factor) => factor.build(table, setup, &mut set).await,
                None => Err(format!(
                    "unknown capability section [capabilities.{name}] (known: {})",
                    factors.names()
                )),
            };
            if let Err(message) = built {
                errors.push(SectionError {
                    section: name.to_string(),
                    message,
                });
            }
        }
        (set, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[tokio::test]
    async fn a_failing_section_is_named_and_the_others_still_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = table("backend = \"whisper-cpp\"\nmodel = \"no-such-model.bin\"");
        let unknown_key = table("backend = \"openai\"\ncolour = 3");
        let (set, errors) = CapabilitySet::from_sections(
            &Factors::<()>::builtin(),
            &[
                ("transcriber", &broken),
                ("speech", &unknown_key),
                ("telepathy", &toml::Table::new()),
            ],
            Setup {
                data_dir: dir.path(),
                base_dir: dir.path(),
                knowledge_store: None,
            },
        )
        .await;
        assert!(
            set.get::<crate::capabilities::transcriber::TranscriberService>()
                .is_none()
        );
        assert!(
            set.get::<crate::capabilities::speech::SpeechService>()
                .is_none()
        );
        let sections: Vec<_> = errors.iter().map(|e| e.section.as_str()).collect();
        assert_eq!(sections, ["transcriber", "speech", "telepathy"]);
        assert!(
            errors[0].message.contains("no-such-model.bin"),
            "{errors:?}"
        );
        assert!(
            errors[1].message.starts_with("[capabilities.speech]"),
            "{errors:?}"
        );
    }

    #[test]
    fn typed_settings_name_their_section() {
        let err = crate::capabilities::knowledge::section_config(&table("timeout_ms = \"many\""))
            .expect_err("a string is no limit");
        assert!(err.starts_with("[capabilities.knowledge]: "), "{err}");
        assert!(
            crate::capabilities::transcriber::section_config(&table("backend = \"openai\""))
                .is_ok()
        );
    }
}
