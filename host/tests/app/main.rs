//! The app's integration tests, one binary: the CLI, the server (Twilio
//! protocol, API, dashboard in a browser), conversations end to end, speech,
//! stage authoring and answer quality through `callpipe kb eval`.

mod answer_quality;
mod authoring;
mod cli;
mod cluster;
mod conversation;
mod dashboard;
mod event_stream;
mod faults;
mod in_process;
mod languages;
mod llm;
mod models;
mod partition;
mod replay;
mod rolling;
mod serve;
mod skew;
mod speech;
mod stop;
mod support;
mod transcribe;
