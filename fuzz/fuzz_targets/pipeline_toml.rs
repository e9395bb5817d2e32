//! The pipeline TOML as ops people edit it: any text must parse or come
//! back as a located diagnostic (file:line:column), never panic; every span
//! the loader reports from must map to a line and column.
#![no_main]

// `model` refers to `super::diagnostics`: both sit at the root here.
#[path = "../../crates/runtime/src/pipeline/diagnostics.rs"]
#[allow(dead_code)]
mod diagnostics;
#[path = "../../crates/runtime/src/pipeline/model.rs"]
#[allow(dead_code)]
mod model;

use diagnostics::SourceMap;
use model::PipelineFile;
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    let map = SourceMap { file, text };
    match PipelineFile::parse(file, text) {
        Err(d) => {
            let _ = d.to_string();
        }
        Ok(p) => {
            let _ = map.at(Some(p.pipeline.name.span()), None, "name").to_string();
            for (_, section) in p.capabilities.sections() {
                let _ = map.at(Some(section.span()), None, "capability");
            }
            for s in &p.stages {
                let name = s.get_ref().name.get_ref();
                let _ = map.at(Some(s.span()), Some(name), "stage").to_string();
                let _ = map.at(Some(s.get_ref().component.span()), Some(name), "component");
                for g in &s.get_ref().grants {
                    let _ = map.at(Some(g.span()), Some(name), "grant");
                }
                if let Some(on) = &s.get_ref().on {
                    for k in on.get_ref() {
                        let _ = map.at(Some(k.span()), Some(name), "kind");
                    }
                }
                let _ = s.get_ref().config_json();
            }
        }
    }
});
