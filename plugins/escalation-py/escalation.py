"""What the `escalation` stage decides, in plain Python (no WebAssembly):
which words of a technician's sentence say the call is urgent.
`python3 -m unittest` runs its tests natively."""

import json
import unicodedata

# Words that make a call urgent, French and English; the pipeline may
# replace them: config = { words = ["..."] }.
DEFAULT_WORDS = [
    "urgent", "urgence", "incendie", "feu", "fumée", "danger", "blessé",
    "fire", "smoke", "injured", "emergency",
]


def fold(text):
    """Lower case without accents, so "Fumee" matches "fumée"."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def parse_config(config_json):
    """The stage's config, or ValueError saying what is wrong with it."""
    if not config_json.strip() or config_json.strip() == "null":
        return [fold(w) for w in DEFAULT_WORDS]
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"config is not JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError("config must be a table")
    unknown = set(config) - {"words"}
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    words = config.get("words", DEFAULT_WORDS)
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError("`words` must be a list of non-empty strings")
    return [fold(w) for w in words]


def urgent_words(text, words):
    """The configured words found in `text`, as whole words, in order."""
    tokens = set(
        "".join(c if c.isalnum() else " " for c in fold(text)).split()
    )
    return [w for w in words if w in tokens]
