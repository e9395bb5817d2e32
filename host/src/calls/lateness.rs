//! How late a stream's frames arrive, measured against the stream's own
//! clock: every Twilio media message carries `timestamp`, the ms since the
//! stream started, so a frame is due at (stream start + timestamp) and its
//! lateness is its arrival minus that. Unlike the frame lag (arrival to the
//! end of the audio stages, `call.rs`), this counts the time a frame waited
//! in the socket, and any backlog of the sender or the network.
//!
//! The stream's start is not sent; it is estimated as the earliest instant
//! consistent with every frame seen so far (a frame can arrive late, never
//! early): the minimum of (arrival - timestamp). The first `SETTLE` frames
//! only settle that estimate and are not reported, and so do the first
//! frames after the timestamps start over. A clock that runs slow still
//! reads as a growing lateness (up to `CAP`): from arrivals alone it cannot
//! be told from a growing backlog.

use std::time::{Duration, Instant};

/// Frames that settle the estimate of the stream's start (1 s of 20 ms
/// frames).
pub const SETTLE: u32 = 50;

/// A sample at most this late: one stream whose timestamps run ahead
/// (a sender's bug, a clock jump) must not move the host-wide average that
/// admission reads by more than its share.
pub const CAP: Duration = Duration::from_secs(1);

/// Once settled, a frame that would move the stream's start earlier by
/// more than this is a timestamp out of line (one frame stamped far ahead
/// of its neighbours), not a better estimate: it is skipped, so it cannot
/// make every later frame of the stream look late.
pub const JUMP: Duration = Duration::from_millis(500);

/// One stream's clock, per track that carries timestamps.
#[derive(Debug, Default)]
pub struct StreamClock {
    origin: Option<Instant>,
    frames: u32,
    /// The newest timestamp taken in.
    last_ms: Option<u64>,
}

impl StreamClock {
    /// The frame stamped `timestamp_ms` arrived at `at`: how late it is,
    /// once the estimate has settled.
    pub fn lateness(&mut self, timestamp_ms: u64, at: Instant) -> Option<Duration> {
        let due_offset = Duration::from_millis(timestamp_ms);
        // A timestamp further back than this process's clock goes is not one.
        let start = at.checked_sub(due_offset)?;
        // Timestamps only grow; one far behind the newest is the sender's
        // clock starting over, not a frame that late: settle again.
        if self
            .last_ms
            .is_some_and(|last| timestamp_ms.saturating_add(JUMP.as_millis() as u64) < last)
        {
            *self = StreamClock::default();
        }
        let origin = match self.origin {
            Some(o) if o <= start => o,
            Some(o) if self.frames > SETTLE && o.duration_since(start) > JUMP => return None,
            _ => {
                self.origin = Some(start);
                start
            }
        };
        self.last_ms = Some(self.last_ms.map_or(timestamp_ms, |l| l.max(timestamp_ms)));
        self.frames = self.frames.saturating_add(1);
        if self.frames <= SETTLE {
            return None;
        }
        Some(at.saturating_duration_since(origin + due_offset).min(CAP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn frames_on_time_are_not_late_and_the_first_second_settles() {
        let t0 = Instant::now();
        let mut c = StreamClock::default();
        for i in 0..SETTLE as u64 {
            assert_eq!(c.lateness(i * 20, t0 + ms(i * 20 + 3)), None);
        }
        assert_eq!(c.lateness(1_000, t0 + ms(1_003)), Some(Duration::ZERO));
    }

    #[test]
    fn a_backlog_counts_even_when_the_frames_are_read_at_once() {
        // Frames 100..119 sat in the socket and are read in one burst at
        // 2.4 s: the first is 400 ms late, the last 20 ms.
        let t0 = Instant::now();
        let mut c = StreamClock::default();
        for i in 0..100u64 {
            c.lateness(i * 20, t0 + ms(i * 20));
        }
        let burst = t0 + ms(2_400);
        let first = c.lateness(100 * 20, burst);
        let last = c.lateness(119 * 20, burst);
        assert_eq!((first, last), (Some(ms(400)), Some(ms(20))));
    }

    #[test]
    fn a_late_start_is_corrected_by_the_frames_that_follow() {
        // The first frames came 300 ms late (a slow connect); the estimate
        // moves to the earliest consistent start and later frames are on time.
        let t0 = Instant::now();
        let mut c = StreamClock::default();
        c.lateness(0, t0 + ms(300));
        for i in 1..=SETTLE as u64 + 5 {
            c.lateness(i * 20, t0 + ms(i * 20));
        }
        assert_eq!(c.lateness(2_000, t0 + ms(2_000)), Some(Duration::ZERO));
    }

    #[test]
    fn one_frame_stamped_far_ahead_does_not_make_the_rest_late() {
        let t0 = Instant::now();
        let mut c = StreamClock::default();
        for i in 0..=SETTLE as u64 {
            c.lateness(i * 20, t0 + ms(i * 20));
        }
        // Frame 60 claims 5 s more than it is; the next ones are on time.
        assert_eq!(c.lateness(1_200 + 5_000, t0 + ms(1_200)), None);
        assert_eq!(c.lateness(1_220, t0 + ms(1_220)), Some(Duration::ZERO));
    }

    #[test]
    fn timestamps_that_start_over_settle_again_instead_of_reading_late() {
        let t0 = Instant::now();
        let mut c = StreamClock::default();
        for i in 0..=SETTLE as u64 * 2 {
            c.lateness(i * 20, t0 + ms(i * 20));
        }
        // At 2.04 s the sender's clock starts again from 0.
        let restart = t0 + ms(2_040);
        assert_eq!(c.lateness(0, restart), None, "settling again");
        for i in 1..=SETTLE as u64 {
            c.lateness(i * 20, restart + ms(i * 20));
        }
        let on_time = restart + ms(1_020);
        assert_eq!(c.lateness(1_020, on_time), Some(Duration::ZERO));
    }

    #[test]
    fn absurd_timestamps_are_ignored_or_capped() {
        let t0 = Instant::now();
        let mut c = StreamClock::default();
        assert_eq!(c.lateness(u64::MAX, t0), None);
        for i in 0..=SETTLE as u64 {
            c.lateness(i * 20, t0 + ms(i * 20));
        }
        assert_eq!(c.lateness(1_020, t0 + ms(60_000)), Some(CAP));
    }
}
