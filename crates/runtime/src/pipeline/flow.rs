//! The event-flow check, pure: stage by stage, which kinds can reach a stage
//! (the host injects some, earlier stages emit others), so a stage waiting
//! for a kind nothing produces is refused at load, before any call.

use super::event::{HOST_INJECTED, KindSet};
use crate::bindings::types::EventKind;

pub struct Flow {
    /// Kinds that can reach the next stage.
    available: KindSet,
    /// Whether an earlier stage handles audio (then transcripts must come
    /// from a stage, not from the chat path).
    audio_before: bool,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            available: HOST_INJECTED.into_iter().collect(),
            audio_before: false,
        }
    }
}

impl Flow {
    /// The kinds in `on` that cannot reach a stage placed here. Text typed
    /// on the dashboard enters as `transcript` at the first stage that
    /// handles it, so a stage with no audio stage before it may wait for
    /// transcripts (a chat-only pipeline).
    pub fn unreachable(&self, on: KindSet) -> Vec<EventKind> {
        on.iter()
            .filter(|&kind| {
                let chat_entry = matches!(kind, EventKind::Transcript) && !self.audio_before;
                !self.available.contains(kind) && !chat_entry
            })
            .collect()
    }

    /// A stage handling `on` and emitting `emits` sits here.
    pub fn pass(&mut self, on: KindSet, emits: KindSet) {
        for kind in emits.iter() {
            self.available.insert(kind);
        }
        self.audio_before |= on.contains(EventKind::EncodedAudio) || on.contains(EventKind::Audio);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    fn set(kinds: &[EventKind]) -> KindSet {
        kinds.iter().copied().collect()
    }

    #[test]
    fn the_default_pipeline_flows() {
        let mut f = Flow::default();
        let stages: &[(&[EventKind], &[EventKind])] = &[
            (&[EncodedAudio], &[Audio]),
            (&[Audio, CallEnded], &[SpeechStarted, Utterance]),
            (&[Utterance, SpeechStarted], &[Utterance]),
            (&[Utterance, Custom], &[Transcript]),
            (&[Transcript], &[Transcript, Analysis]),
            (&[Analysis], &[Suggestion, Say]),
        ];
        for (on, emits) in stages {
            assert!(f.unreachable(set(on)).is_empty(), "{on:?}");
            f.pass(set(on), set(emits));
        }
    }

    #[test]
    fn a_kind_nothing_emits_is_unreachable() {
        let f = Flow::default();
        assert_eq!(f.unreachable(set(&[Analysis, Dtmf])), [Analysis]);
    }

    #[test]
    fn transcripts_come_from_chat_only_before_any_audio_stage() {
        let mut f = Flow::default();
        assert!(
            f.unreachable(set(&[Transcript])).is_empty(),
            "chat-only pipeline"
        );
        f.pass(set(&[EncodedAudio]), set(&[Audio]));
        assert_eq!(f.unreachable(set(&[Transcript])), [Transcript]);
    }
}
