"""`escalation` stage, written in Python (componentize-py): when the
technician's words say the call is urgent (fire, smoke, someone hurt), it
passes the transcript on followed by a `custom` event named `escalation`
listing those words, for a later stage or the dashboard to act on.
The decisions live in escalation.py, tested natively."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

import escalation

# One instance serves one call: per-call state is module state.
WORDS = []


class Stage(exports.Stage):
    def describe(self):
        return types.Descriptor(
            name="escalation",
            version="0.1.0",
            emits=[types.EventKind.TRANSCRIPT, types.EventKind.CUSTOM],
            default_on=[types.EventKind.TRANSCRIPT],
        )

    def init(self, config_json, call):
        global WORDS
        try:
            WORDS = escalation.parse_config(config_json)
        except ValueError as e:
            raise Err(types.StageError_InvalidConfig(str(e)))

    def handle(self, event):
        out = [event]
        if isinstance(event, types.Event_Transcript):
            t = event.value
            if t.role == types.SpeakerRole.TECHNICIAN:
                found = escalation.urgent_words(t.text, WORDS)
                if found:
                    log.log(log.Level.WARN, f"urgent call: {', '.join(found)}")
                    out.append(types.Event_Custom(types.Custom(
                        name="escalation",
                        json=json.dumps({"utterance_id": t.utterance_id, "words": found}),
                    )))
        return out
