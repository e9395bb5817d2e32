//! Audio we send back to the caller on a bidirectional stream: chunked into
//! 20 ms frames, paced in real time on absolute deadlines, with a mark after
//! each chunk so we know what Twilio actually played. `clear` stops it.

use super::messages::{FRAME_BYTES, outbound_clear, outbound_mark, outbound_media};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Frames between marks: a mark says "everything before me was played".
pub const CHUNK_FRAMES: usize = 10;
/// Frames sent ahead of real time, so Twilio's buffer never runs dry.
const LEAD_FRAMES: u32 = 3;
const FRAME: Duration = Duration::from_millis(20);

enum Command {
    Play(Vec<u8>),
    Clear,
    Marked(String),
}

/// Handle to a call's player task.
#[derive(Clone)]
pub struct Player {
    tx: mpsc::Sender<Command>,
    playing: Arc<AtomicBool>,
}

impl Player {
    /// Starts the player; `outgoing` carries text messages to Twilio.
    pub fn start(stream_sid: String, outgoing: mpsc::Sender<String>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let playing = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(stream_sid, outgoing, rx, playing.clone()));
        Self { tx, playing }
    }

    /// Queues 8 kHz mu-law audio.
    pub async fn play(&self, mulaw: Vec<u8>) {
        let _ = self.tx.send(Command::Play(mulaw)).await;
    }

    /// Barge-in: drop what is queued and tell Twilio to clear its buffer.
    pub async fn clear(&self) {
        let _ = self.tx.send(Command::Clear).await;
    }

    /// Twilio reports that playback reached a mark.
    pub async fn marked(&self, name: String) {
        let _ = self.tx.send(Command::Marked(name)).await;
    }

    /// Audio is queued or sent but not yet confirmed played.
    pub fn is_playing(&self) -> bool {
        self.playing.load(Ordering::Relaxed)
    }
}

async fn run(
    stream_sid: String,
    out: mpsc::Sender<String>,
    mut rx: mpsc::Receiver<Command>,
    playing: Arc<AtomicBool>,
) {
    let mut queue: VecDeque<u8> = VecDeque::new();
    let mut pending_marks: HashSet<String> = HashSet::new();
    let mut next_mark = 0u64;
    let mut sent_in_chunk = 0usize;
    // Real-time clock of the stream being sent: frame k is due at origin + k*20ms.
    let mut origin = Instant::now();
    let mut frames_sent: u32 = 0;
    loop {
        playing.store(
            !queue.is_empty() || !pending_marks.is_empty(),
            Ordering::Relaxed,
        );
        let due = origin + FRAME * frames_sent.saturating_sub(LEAD_FRAMES);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Command::Play(audio)) => {
                    if queue.is_empty() && pending_marks.is_empty() {
                        origin = Instant::now();
                        frames_sent = 0;
                    }
                    queue.extend(audio);
                }
                Some(Command::Clear) => {
                    queue.clear();
                    sent_in_chunk = 0;
                    // Twilio answers a clear by returning the outstanding marks.
                    if out.send(outbound_clear(&stream_sid)).await.is_err() {
                        break;
                    }
                }
                Some(Command::Marked(name)) => {
                    pending_marks.remove(&name);
                }
            },
            _ = tokio::time::sleep_until(due), if !queue.is_empty() => {
                let n = queue.len().min(FRAME_BYTES);
                let mut frame: Vec<u8> = queue.drain(..n).collect();
                frame.resize(FRAME_BYTES, 0xFF); // pad the last frame with silence
                if out.send(outbound_media(&stream_sid, &frame)).await.is_err() {
                    break;
                }
                frames_sent += 1;
                sent_in_chunk += 1;
                if sent_in_chunk == CHUNK_FRAMES || queue.is_empty() {
                    let name = format!("callpipe-{next_mark}");
                    next_mark += 1;
                    sent_in_chunk = 0;
                    if out.send(outbound_mark(&stream_sid, &name)).await.is_err() {
                        break;
                    }
                    pending_marks.insert(name);
                }
            }
        }
    }
    playing.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    // On tokio's paused clock: time moves only when every task waits, so
    // the pacing is measured exactly and a sleep lets the player finish
    // what it was given, whatever the machine's load.
    #[tokio::test(start_paused = true)]
    async fn paces_frames_and_marks_each_chunk() {
        let (tx, mut rx) = mpsc::channel(1024);
        let player = Player::start("MZ1".into(), tx);
        player.play(vec![0x7F; FRAME_BYTES * 25]).await; // 25 frames: 3 chunks
        let started = Instant::now();
        let mut media = 0;
        let mut marks = Vec::new();
        while marks.len() < 3 {
            let msg: serde_json::Value = serde_json::from_str(&rx.recv().await.unwrap()).unwrap();
            match msg["event"].as_str().unwrap() {
                "media" => media += 1,
                "mark" => marks.push(msg["mark"]["name"].as_str().unwrap().to_string()),
                other => panic!("{other}"),
            }
        }
        assert_eq!(media, 25);
        assert_eq!(marks, ["callpipe-0", "callpipe-1", "callpipe-2"]);
        // 25 frames paced at 20 ms after a 3-frame lead: the last leaves
        // 21 frames in.
        assert_eq!(started.elapsed(), Duration::from_millis(20 * 21));
        assert!(player.is_playing(), "marks not confirmed yet");
        for m in marks {
            player.marked(m).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!player.is_playing());
    }

    #[tokio::test(start_paused = true)]
    async fn clear_drops_the_queue_and_tells_twilio() {
        let (tx, mut rx) = mpsc::channel(1024);
        let player = Player::start("MZ1".into(), tx);
        player.play(vec![0x7F; FRAME_BYTES * 100]).await;
        // Between two frames (not on one: which of two timers due at the
        // same instant fires first is not fixed).
        tokio::time::sleep(Duration::from_millis(110)).await;
        player.clear().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = Vec::new();
        while let Ok(m) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&m).unwrap();
            seen.push(v["event"].as_str().unwrap().to_string());
        }
        let media = seen.iter().filter(|e| *e == "media").count();
        // The 3-frame lead, then one every 20 ms until the clear at 110 ms.
        assert_eq!(media, 9, "playback stops at the clear");
        assert!(seen.contains(&"clear".to_string()));
    }
}
