//! 2x sample-rate conversion (8 kHz <-> 16 kHz) with a windowed-sinc
//! half-band low-pass filter, polyphase so only the non-zero taps are computed.
//!
//! Both converters keep their filter history between calls, so a stream can
//! be fed 20 ms at a time; after warm-up no call allocates.

/// Non-zero odd taps on each side of the centre; the filter has 4*TAPS-1 taps.
const TAPS: usize = 12;
/// Input samples kept between calls.
const HISTORY: usize = 2 * TAPS - 1;

/// Odd-tap coefficients h[1], h[3], ..., h[2*TAPS-1] of a Blackman-windowed
/// half-band sinc, normalised so the filter has unit gain at DC.
fn design() -> [f32; TAPS] {
    let len = (4 * TAPS - 1) as f64;
    let mut c = [0f32; TAPS];
    let mut sum = 0.0;
    let mut raw = [0f64; TAPS];
    for (q, r) in raw.iter_mut().enumerate() {
        let k = (2 * q + 1) as f64;
        let sinc = if q % 2 == 0 { 1.0 } else { -1.0 } / (std::f64::consts::PI * k);
        let n = k + (2 * TAPS - 1) as f64; // position within the window
        let x = 2.0 * std::f64::consts::PI * n / (len - 1.0);
        let window = 0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos();
        *r = sinc * window;
        sum += *r;
    }
    // The centre tap is 0.5 and the two sides together must add 0.5.
    for (o, r) in c.iter_mut().zip(raw) {
        *o = (r * 0.25 / sum) as f32;
    }
    c
}

#[inline]
fn to_i16(x: f32) -> i16 {
    // `round_ties_even` is one instruction in wasm; `round` is a libm call.
    x.round_ties_even().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// Dot product over fixed-size arrays: no bounds checks, vectorisable.
#[inline]
fn dot<const N: usize>(a: &[f32; N], b: &[f32; N]) -> f32 {
    let mut acc = [0f32; 4];
    let (a_chunks, a_rest) = a.as_chunks::<4>();
    let (b_chunks, b_rest) = b.as_chunks::<4>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

/// Upsampler kernel over the 2*TAPS input samples around a midpoint:
/// symmetric copies of the odd taps, doubled for the zero-stuffing gain.
fn interpolation_kernel(c: &[f32; TAPS]) -> [f32; 2 * TAPS] {
    let mut k = [0f32; 2 * TAPS];
    for (q, &cq) in c.iter().enumerate() {
        k[TAPS - 1 - q] = 2.0 * cq;
        k[TAPS + q] = 2.0 * cq;
    }
    k
}

/// Decimator kernel over the 2*REACH+1 samples around a centre: the full
/// half-band filter, zeros included (cheaper than skipping them with SIMD).
fn decimation_kernel(c: &[f32; TAPS]) -> [f32; 2 * REACH + 1] {
    let mut k = [0f32; 2 * REACH + 1];
    k[REACH] = 0.5;
    for (q, &cq) in c.iter().enumerate() {
        let d = 2 * q + 1;
        k[REACH - d] = cq;
        k[REACH + d] = cq;
    }
    k
}

/// 8 kHz -> 16 kHz.
#[derive(Clone)]
pub struct Upsampler2x {
    kernel: [f32; 2 * TAPS],
    line: Vec<f32>,
}

impl Default for Upsampler2x {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler2x {
    pub fn new() -> Self {
        let mut line = Vec::with_capacity(HISTORY + 320);
        line.resize(HISTORY, 0.0);
        Self {
            kernel: interpolation_kernel(&design()),
            line,
        }
    }

    /// Output delay introduced by the filter, in output samples.
    pub const fn delay() -> usize {
        2 * TAPS
    }

    pub fn reset(&mut self) {
        self.line.clear();
        self.line.resize(HISTORY, 0.0);
    }

    /// Appends exactly `2 * input.len()` samples to `out`.
    pub fn process_into(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.line.extend(input.iter().map(|&s| s as f32));
        let start = out.len();
        out.resize(start + input.len() * 2, 0);
        for (pair, window) in out[start..]
            .chunks_exact_mut(2)
            .zip(self.line.windows(2 * TAPS))
        {
            let window: &[f32; 2 * TAPS] = window.try_into().expect("window has 2*TAPS samples");
            // window[TAPS-1] is reproduced as is; the midpoint after it is interpolated.
            pair[0] = to_i16(window[TAPS - 1]);
            pair[1] = to_i16(dot(&self.kernel, window));
        }
        let consumed = self.line.len() - HISTORY;
        self.line.drain(..consumed);
    }
}

/// 16 kHz -> 8 kHz.
#[derive(Clone)]
pub struct Downsampler2x {
    kernel: [f32; 2 * REACH + 1],
    line: Vec<f32>,
    /// Input samples seen and outputs produced since the last reset, so each
    /// call yields exactly half of what it was given over time.
    received: u64,
    produced: u64,
}

impl Default for Downsampler2x {
    fn default() -> Self {
        Self::new()
    }
}

/// Samples on either side of an output's centre sample.
const REACH: usize = 2 * TAPS - 1;
/// Zeros the decimator starts with: one more than twice its reach, so its
/// delay (REACH + 1 input samples) is even and lands on a whole output sample.
const DOWN_PRIME: usize = 2 * REACH + 1;

impl Downsampler2x {
    pub fn new() -> Self {
        let mut line = Vec::with_capacity(DOWN_PRIME + 640);
        line.resize(DOWN_PRIME, 0.0);
        Self {
            kernel: decimation_kernel(&design()),
            line,
            received: 0,
            produced: 0,
        }
    }

    /// Output delay introduced by the filter, in input (16 kHz) samples.
    pub const fn delay() -> usize {
        DOWN_PRIME - REACH
    }

    pub fn reset(&mut self) {
        self.line.clear();
        self.line.resize(DOWN_PRIME, 0.0);
        self.received = 0;
        self.produced = 0;
    }

    /// Appends `input.len() / 2` samples to `out` (an odd leftover sample is
    /// kept for the next call).
    pub fn process_into(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.line.extend(input.iter().map(|&s| s as f32));
        self.received += input.len() as u64;
        let mut centre = REACH;
        while centre + REACH < self.line.len() && self.produced < self.received / 2 {
            self.produced += 1;
            let window: &[f32; 2 * REACH + 1] = self.line[centre - REACH..=centre + REACH]
                .try_into()
                .expect("window has 2*REACH+1 samples");
            out.push(to_i16(dot(&self.kernel, window)));
            centre += 2;
        }
        let consumed = centre - REACH;
        self.line.drain(..consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn tone(freq: f64, rate: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate).sin()).round() as i16)
            .collect()
    }

    /// Amplitude of `freq` in `x` (Goertzel-style correlation), skipping warm-up.
    fn amplitude(x: &[i16], freq: f64, rate: f64) -> f64 {
        let x = &x[200..];
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in x.iter().enumerate() {
            let ph = 2.0 * PI * freq * i as f64 / rate;
            re += s as f64 * ph.cos();
            im += s as f64 * ph.sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    fn db(a: f64, reference: f64) -> f64 {
        20.0 * (a / reference).log10()
    }

    fn run_up(input: &[i16]) -> Vec<i16> {
        let mut up = Upsampler2x::new();
        let mut out = Vec::new();
        for frame in input.chunks(160) {
            up.process_into(frame, &mut out);
        }
        out
    }

    fn run_down(input: &[i16]) -> Vec<i16> {
        let mut down = Downsampler2x::new();
        let mut out = Vec::new();
        for frame in input.chunks(320) {
            down.process_into(frame, &mut out);
        }
        out
    }

    #[test]
    fn upsampling_keeps_the_tone_and_rejects_its_image() {
        let input = tone(1000.0, 8000.0, 8000, 10000.0);
        let out = run_up(&input);
        assert_eq!(out.len(), 16000);
        let kept = amplitude(&out, 1000.0, 16000.0);
        assert!(
            db(kept, 10000.0).abs() < 0.5,
            "passband gain {} dB",
            db(kept, 10000.0)
        );
        // Zero-stuffing alone would leave a full-size image at 8000-1000 Hz.
        let image = amplitude(&out, 7000.0, 16000.0);
        assert!(
            db(image, 10000.0) < -50.0,
            "image at {} dB",
            db(image, 10000.0)
        );
    }

    #[test]
    fn downsampling_blocks_aliasing() {
        let pass = run_down(&tone(1000.0, 16000.0, 16000, 10000.0));
        assert_eq!(pass.len(), 8000);
        let kept = amplitude(&pass, 1000.0, 8000.0);
        assert!(db(kept, 10000.0).abs() < 0.5);
        // A 6 kHz tone would alias to 2 kHz if samples were simply dropped.
        let blocked = run_down(&tone(6000.0, 16000.0, 16000, 10000.0));
        let alias = amplitude(&blocked, 2000.0, 8000.0);
        assert!(
            db(alias, 10000.0) < -50.0,
            "alias at {} dB",
            db(alias, 10000.0)
        );
    }

    #[test]
    fn round_trip_preserves_speech_band_signal() {
        let input = tone(440.0, 8000.0, 4000, 8000.0);
        let back = run_down(&run_up(&input));
        assert_eq!(back.len(), input.len());
        let delay = (Upsampler2x::delay() + Downsampler2x::delay()) / 2;
        let err: f64 = input[..input.len() - delay]
            .iter()
            .zip(&back[delay..])
            .skip(100)
            .map(|(&a, &b)| ((a - b) as f64).abs())
            .fold(0.0, f64::max);
        assert!(err < 80.0, "max error {err}");
    }

    #[test]
    fn frame_size_does_not_change_the_result() {
        let input = tone(700.0, 8000.0, 1000, 9000.0);
        let whole = {
            let mut up = Upsampler2x::new();
            let mut out = Vec::new();
            up.process_into(&input, &mut out);
            out
        };
        let mut up = Upsampler2x::new();
        let mut pieces = Vec::new();
        for frame in input.chunks(37) {
            up.process_into(frame, &mut pieces);
        }
        assert_eq!(whole, pieces);
        let mut down = Downsampler2x::new();
        let mut a = Vec::new();
        for frame in whole.chunks(33) {
            down.process_into(frame, &mut a);
        }
        let mut b = Vec::new();
        Downsampler2x::new().process_into(&whole, &mut b);
        assert_eq!(a, b);
    }
}
