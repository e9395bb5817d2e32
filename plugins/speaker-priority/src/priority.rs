use callpipe_sdk::types::{CallInfo, Event, SpeakerRole, StageError, Track, Utterance};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Technician,
    Agent,
    Unknown,
}

impl From<Role> for SpeakerRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Technician => SpeakerRole::Technician,
            Role::Agent => SpeakerRole::Agent,
            Role::Unknown => SpeakerRole::Unknown,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackRoles {
    pub inbound: Role,
    pub outbound: Role,
}

impl Default for TrackRoles {
    fn default() -> Self {
        Self {
            inbound: Role::Technician,
            outbound: Role::Agent,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Shortest technician utterance passed on.
    pub technician_min_ms: u32,
    /// Shortest agent utterance passed on.
    pub agent_min_ms: u32,
    /// Role heard on each Twilio track when no registered speaker says otherwise.
    pub track_roles: TrackRoles,
    /// Longest an agent utterance waits for the technician to finish.
    pub max_hold_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            technician_min_ms: 500,
            agent_min_ms: 1000,
            track_roles: TrackRoles::default(),
            max_hold_ms: 5000,
        }
    }
}

pub struct Priority {
    config: Config,
    call: CallInfo,
    /// Stream time at which the technician started talking, while they are.
    technician_since: Option<u64>,
    held: Vec<Utterance>,
}

impl Priority {
    pub fn from_json(json: &str, call: CallInfo) -> Result<Self, StageError> {
        Self::with_config(callpipe_sdk::config("speaker-priority", json)?, call)
    }

    /// The stage from its parsed `[stages.config]`.
    pub fn with_config(config: Config, call: CallInfo) -> Result<Self, StageError> {
        Ok(Self {
            config,
            call,
            technician_since: None,
            held: Vec::new(),
        })
    }

    /// Speaker id and role for a track: a registered speaker on that track
    /// wins, then the configured role of the track.
    fn speaker_for(&self, track: Track) -> (String, SpeakerRole) {
        if let Some(s) = self.call.speakers.iter().find(|s| s.track == Some(track)) {
            return (s.id.clone(), s.role);
        }
        let role = match track {
            Track::Inbound => self.config.track_roles.inbound,
            Track::Outbound => self.config.track_roles.outbound,
        };
        let id = match role {
            Role::Technician if !self.call.technician_id.is_empty() => {
                self.call.technician_id.clone()
            }
            Role::Technician => "technician".into(),
            Role::Agent => "agent".into(),
            Role::Unknown => String::new(),
        };
        (id, role.into())
    }

    pub fn handle(&mut self, event: Event) -> Vec<Event> {
        let mut out = Vec::new();
        match event {
            Event::SpeechStarted(s) => {
                if self.speaker_for(s.track).1 == SpeakerRole::Technician {
                    self.technician_since.get_or_insert(s.at_ms);
                }
                out.push(Event::SpeechStarted(s));
            }
            Event::Utterance(u) => self.utterance(u, &mut out),
            Event::CallEnded(info) => {
                self.technician_since = None;
                out.extend(self.held.drain(..).map(Event::Utterance));
                out.push(Event::CallEnded(info));
            }
            other => out.push(other),
        }
        out
    }

    fn utterance(&mut self, mut u: Utterance, out: &mut Vec<Event>) {
        let (id, role) = self.speaker_for(u.track);
        let min_ms = match role {
            SpeakerRole::Technician => self.config.technician_min_ms,
            SpeakerRole::Agent => self.config.agent_min_ms,
            SpeakerRole::Unknown => return, // nobody we serve
        };
        let duration = u.end_ms.saturating_sub(u.start_ms);
        // A partial slice belongs to longer speech, so it is never "too short".
        let keep = u.partial || duration >= min_ms as u64;
        u.speaker_id = id;
        u.role = role;
        match role {
            SpeakerRole::Technician => {
                if keep {
                    out.push(Event::Utterance(u.clone()));
                }
                if !u.partial {
                    self.technician_since = None;
                    out.extend(self.held.drain(..).map(Event::Utterance));
                }
            }
            _ => {
                if !keep {
                    return;
                }
                let waiting_since = self.technician_since;
                match waiting_since {
                    Some(since)
                        if u.end_ms.saturating_sub(since) < self.config.max_hold_ms as u64 =>
                    {
                        self.held.push(u);
                    }
                    _ => {
                        // The technician is silent, or has talked past the
                        // hold limit: nobody waits forever.
                        out.extend(self.held.drain(..).map(Event::Utterance));
                        out.push(Event::Utterance(u));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_sdk::types::{Speaker, SpeechStarted};

    fn call(speakers: Vec<Speaker>) -> CallInfo {
        CallInfo {
            technician_id: "tech-42".into(),
            technician_name: "Jeanne".into(),
            speakers,
            ..callpipe_sdk::testing::call_info("fr")
        }
    }

    fn utt(id: u64, track: Track, start: u64, end: u64) -> Event {
        Event::Utterance(Utterance {
            id,
            track,
            speaker_id: String::new(),
            role: SpeakerRole::Unknown,
            start_ms: start,
            end_ms: end,
            pre_roll_ms: 0,
            rate: 16000,
            samples: vec![],
            partial: false,
        })
    }

    fn ids(events: &[Event]) -> Vec<(u64, String, SpeakerRole)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Utterance(u) => Some((u.id, u.speaker_id.clone(), u.role)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn roles_come_from_tracks_and_durations_filter() {
        let mut p = Priority::from_json("", call(vec![])).unwrap();
        let out = p.handle(utt(1, Track::Inbound, 0, 600));
        assert_eq!(
            ids(&out),
            [(1, "tech-42".to_string(), SpeakerRole::Technician)]
        );
        assert!(p.handle(utt(2, Track::Inbound, 0, 400)).is_empty());
        assert!(p.handle(utt(3, Track::Outbound, 0, 900)).is_empty());
        let out = p.handle(utt(4, Track::Outbound, 0, 1000));
        assert_eq!(ids(&out), [(4, "agent".to_string(), SpeakerRole::Agent)]);
    }

    #[test]
    fn registered_speakers_override_and_unknown_are_dropped() {
        let speakers = vec![Speaker {
            id: "agent-7".into(),
            name: "Paul".into(),
            role: SpeakerRole::Agent,
            track: Some(Track::Outbound),
        }];
        let mut p =
            Priority::from_json(r#"{"track_roles": {"inbound": "unknown"}}"#, call(speakers))
                .unwrap();
        assert!(p.handle(utt(1, Track::Inbound, 0, 5000)).is_empty());
        assert_eq!(
            ids(&p.handle(utt(2, Track::Outbound, 0, 2000)))[0].1,
            "agent-7"
        );
    }

    #[test]
    fn technician_goes_first_when_both_are_pending() {
        let mut p = Priority::from_json("", call(vec![])).unwrap();
        let started = p.handle(Event::SpeechStarted(SpeechStarted {
            track: Track::Inbound,
            at_ms: 1000,
        }));
        assert_eq!(started.len(), 1, "speech-started passes through");
        // The agent finishes while the technician is still talking: held.
        assert!(p.handle(utt(1, Track::Outbound, 500, 2000)).is_empty());
        let out = p.handle(utt(2, Track::Inbound, 1000, 3000));
        let order: Vec<u64> = ids(&out).iter().map(|x| x.0).collect();
        assert_eq!(order, [2, 1]);
    }

    #[test]
    fn agent_is_not_held_forever() {
        let mut p = Priority::from_json(r#"{"max_hold_ms": 1000}"#, call(vec![])).unwrap();
        p.handle(Event::SpeechStarted(SpeechStarted {
            track: Track::Inbound,
            at_ms: 0,
        }));
        let out = p.handle(utt(1, Track::Outbound, 0, 4000));
        assert_eq!(ids(&out).len(), 1);
    }

    #[test]
    fn hang_up_releases_held_utterances() {
        let mut p = Priority::from_json("", call(vec![])).unwrap();
        p.handle(Event::SpeechStarted(SpeechStarted {
            track: Track::Inbound,
            at_ms: 0,
        }));
        assert!(p.handle(utt(1, Track::Outbound, 0, 1500)).is_empty());
        let out = p.handle(Event::CallEnded(call(vec![])));
        assert_eq!(ids(&out).len(), 1);
        assert!(matches!(out.last(), Some(Event::CallEnded(_))));
    }
}
