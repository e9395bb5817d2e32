//! Twilio: Media Streams messages, webhook signatures, TwiML and the REST
//! client for call control. Twilio's JSON and form formats stay in here.

pub mod messages;
pub mod playback;
pub mod rest;
pub mod signature;
pub mod stream_token;
pub mod twiml;
