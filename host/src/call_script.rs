//! Scripted calls for `callpipe simulate --script`: who says what, in
//! order, synthesised with the speech capability (espeak-ng by default)
//! into the two Twilio tracks. A turn on one track is silence on the other.
//!
//! ```toml
//! language = "en"
//! [[turn]]
//! track = "inbound"          # the technician
//! say = "Hello, I have a problem on site."
//! pause_s = 3.0              # silence after the turn
//! [[turn]]
//! track = "outbound"         # the support agent
//! say = "Did you check the recorder?"
//! ```

use crate::audio::frames::{FRAME_BYTES, TrackFrames};
use crate::bindings::types::Track;
use crate::capabilities::speech::SpeechConfig;
use anyhow::Context;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Language of every turn that names none.
    #[serde(default = "default_language")]
    pub language: String,
    /// Silence before the first turn, in seconds.
    #[serde(default = "default_lead")]
    pub lead_s: f64,
    /// The voice: `[capabilities.speech]`'s settings; espeak-ng if absent.
    #[serde(default)]
    pub speech: Option<SpeechConfig>,
    /// The article this call should bring up; `simulate` says whether it
    /// was shown.
    #[serde(default)]
    pub expected: Option<String>,
    #[serde(rename = "turn")]
    pub turns: Vec<Turn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(default = "default_track")]
    pub track: ScriptTrack,
    pub say: String,
    #[serde(default)]
    pub language: Option<String>,
    /// Silence after the turn, in seconds.
    #[serde(default = "default_pause")]
    pub pause_s: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScriptTrack {
    Inbound,
    Outbound,
}

fn default_language() -> String {
    "fr".into()
}
fn default_lead() -> f64 {
    0.5
}
fn default_track() -> ScriptTrack {
    ScriptTrack::Inbound
}
fn default_pause() -> f64 {
    2.0
}

impl Script {
    pub fn read(path: &Path) -> anyhow::Result<Script> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let script: Script = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!(":{line}")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message())
        })?;
        anyhow::ensure!(
            !script.turns.is_empty(),
            "{}: no [[turn]] to play",
            path.display()
        );
        Ok(script)
    }

    pub fn has_outbound(&self) -> bool {
        self.turns.iter().any(|t| t.track == ScriptTrack::Outbound)
    }

    /// Both tracks as 20 ms mu-law frames, of equal length.
    pub async fn render(&self) -> anyhow::Result<Vec<TrackFrames>> {
        let config = match &self.speech {
            Some(c) => c.clone(),
            None => toml::from_str::<SpeechConfig>("backend = \"espeak-ng\"")
                .context("default speech settings")?,
        };
        let speech = config.build().context("cannot start the script's voice")?;
        const SILENCE: u8 = 0xFF;
        let samples = |s: f64| (s.max(0.0) * 8000.0) as usize;
        let mut inbound = vec![SILENCE; samples(self.lead_s)];
        let mut outbound = inbound.clone();
        for (n, turn) in self.turns.iter().enumerate() {
            let language = turn.language.as_deref().unwrap_or(&self.language);
            let audio = speech
                .backend
                .synthesize(&turn.say, language)
                .await
                .with_context(|| format!("turn {}: cannot synthesise `{}`", n + 1, turn.say))?;
            let (speaking, other) = match turn.track {
                ScriptTrack::Inbound => (&mut inbound, &mut outbound),
                ScriptTrack::Outbound => (&mut outbound, &mut inbound),
            };
            speaking.extend_from_slice(&audio);
            other.resize(speaking.len(), SILENCE);
            let pause = samples(turn.pause_s);
            speaking.resize(speaking.len() + pause, SILENCE);
            other.resize(speaking.len(), SILENCE);
        }
        let frames = |pcm: Vec<u8>| -> Vec<Vec<u8>> {
            pcm.chunks(FRAME_BYTES)
                .map(|c| {
                    let mut f = c.to_vec();
                    f.resize(FRAME_BYTES, SILENCE);
                    f
                })
                .collect()
        };
        Ok(vec![
            TrackFrames {
                track: Track::Inbound,
                frames: frames(inbound),
            },
            TrackFrames {
                track: Track::Outbound,
                frames: frames(outbound),
            },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_reads_with_defaults_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("call.toml");
        std::fs::write(
            &p,
            "language = \"en\"\n[[turn]]\nsay = \"hello\"\n[[turn]]\ntrack = \"outbound\"\nsay = \"hi\"\npause_s = 1\n",
        )
        .unwrap();
        let s = Script::read(&p).unwrap();
        assert_eq!(s.turns.len(), 2);
        assert_eq!(s.turns[0].track, ScriptTrack::Inbound);
        assert!(s.has_outbound());
        std::fs::write(&p, "[[turn]]\nsay = \"x\"\ntrack = \"sideways\"\n").unwrap();
        let e = Script::read(&p).unwrap_err().to_string();
        assert!(e.contains("call.toml:3"), "{e}");
        std::fs::write(&p, "language = \"fr\"\n").unwrap();
        assert!(Script::read(&p).is_err());
    }
}
