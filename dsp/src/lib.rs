//! Signal processing shared by the host (replay, simulator) and the audio
//! stages compiled to WebAssembly. No allocation on the per-frame paths.

pub mod g711;
pub mod halfband;
pub mod resample;
pub mod rms;

pub use halfband::{Downsampler2x, Upsampler2x};
