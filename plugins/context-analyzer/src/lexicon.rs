//! The default lexicon: equipment (canonical name -> spellings, French,
//! English and as speech recognition writes them) and the phrases that mark
//! an issue, a time ("since when") or something already tried. Every list can
//! be replaced from the stage's config.

use std::collections::BTreeMap;

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn entities() -> BTreeMap<String, Vec<String>> {
    let e: &[(&str, &[&str])] = &[
        (
            "camera",
            &[
                "camera",
                "cameras",
                "camera ip",
                "dome",
                "bullet",
                "ptz",
                "objectif",
            ],
        ),
        (
            "nvr",
            &[
                "nvr",
                "enregistreur",
                "enregistreurs",
                "recorder",
                "haine ve erre",
                "n v r",
                "en vee are",
                "magnetoscope numerique",
            ],
        ),
        (
            "dvr",
            &[
                "dvr",
                "de ve erre",
                "d v r",
                "dee vee are",
                "enregistreur analogique",
            ],
        ),
        (
            "hdd",
            &[
                "disque dur",
                "disque",
                "hdd",
                "hard drive",
                "hard disk",
                "ache de de",
            ],
        ),
        ("switch", &["switch", "commutateur", "swich", "souitche"]),
        (
            "poe",
            &[
                "poe",
                "p o e",
                "pe o eu",
                "injecteur",
                "power over ethernet",
            ],
        ),
        (
            "router",
            &["routeur", "router", "box internet", "box", "modem"],
        ),
        (
            "app",
            &[
                "application",
                "appli",
                "app",
                "smartphone",
                "telephone",
                "mobile",
            ],
        ),
        ("cloud", &["cloud", "abonnement", "subscription", "portail"]),
        (
            "access-control",
            &[
                "controle d acces",
                "access control",
                "controleur",
                "centrale d acces",
            ],
        ),
        (
            "reader",
            &["lecteur", "lecteur de badge", "reader", "card reader"],
        ),
        ("badge", &["badge", "badges", "carte", "card", "tag"]),
        (
            "strike",
            &["gache", "gache electrique", "strike", "electric strike"],
        ),
        (
            "maglock",
            &["ventouse", "ventousse", "maglock", "magnetic lock"],
        ),
        ("door", &["porte", "portail", "door", "gate"]),
        (
            "alarm-panel",
            &[
                "centrale",
                "centrale d alarme",
                "alarme",
                "alarm panel",
                "panel",
                "clavier",
                "keypad",
            ],
        ),
        (
            "detector",
            &[
                "detecteur",
                "detecteurs",
                "capteur",
                "detector",
                "sensor",
                "infrarouge passif",
                "ipv",
            ],
        ),
        ("siren", &["sirene", "siren"]),
        (
            "transmitter",
            &[
                "transmetteur",
                "transmitter",
                "gsm",
                "ge esse emme",
                "communicator",
            ],
        ),
        (
            "intercom",
            &["interphone", "visiophone", "intercom", "platine", "portier"],
        ),
        ("ups", &["onduleur", "ups", "u p s", "batterie de secours"]),
        (
            "power-supply",
            &[
                "alimentation",
                "coffret d alimentation",
                "power supply",
                "transfo",
                "fusible",
            ],
        ),
        ("fiber", &["fibre", "fibre optique", "fiber", "sfp"]),
        // As in the original system, the network and the video stream are
        // things a technician talks about.
        ("network", &["reseau", "network", "lan", "wifi"]),
        ("stream", &["flux", "flux video", "stream", "video stream"]),
        (
            "wireless-bridge",
            &["pont radio", "liaison radio", "wireless bridge", "antenne"],
        ),
    ];
    e.iter().map(|(k, v)| (k.to_string(), list(v))).collect()
}

pub fn issues() -> Vec<String> {
    list(&[
        // French
        "ne fonctionne plus",
        "ne marche plus",
        "marche pas",
        "fonctionne pas",
        "hors ligne",
        "en panne",
        "plus d image",
        "pas d image",
        "image noire",
        "ecran noir",
        "image floue",
        "flou",
        "bipe",
        "sonne",
        "ne s allume plus",
        "ne s allume pas",
        "eteint",
        "eteinte",
        "redemarre",
        "reboote",
        "plante",
        "bloque",
        "bloquee",
        "refuse",
        "refuse le badge",
        "ne s ouvre pas",
        "ne se ferme pas",
        "reste ouverte",
        "ne repond pas",
        "ne repond plus",
        "pas de reseau",
        "pas de signal",
        "coupe",
        "coupent",
        "se declenche",
        "fausse alarme",
        "erreur",
        "defaut",
        "plein",
        "n enregistre pas",
        "n enregistre plus",
        // The original's flagship example: "Ma caméra ne s'enregistre pas".
        "ne s enregistre pas",
        "ne s enregistre plus",
        "s enregistre pas",
        "s enregistre plus",
        "n enregistre rien",
        "introuvable",
        "ne trouve pas",
        "mot de passe",
        "oublie",
        "larsen",
        "gresille",
        "saccade",
        "fige",
        "decroche",
        "surcharge",
        "batterie faible",
        // English
        "not working",
        "doesn t work",
        "does not work",
        "stopped working",
        "offline",
        "no image",
        "no picture",
        "no video",
        "black screen",
        "blurry",
        "beeping",
        "beeps",
        "won t turn on",
        "dead",
        "keeps rebooting",
        "reboots",
        "stuck",
        "frozen",
        "refused",
        "won t open",
        "does not open",
        "stays open",
        "not responding",
        "no signal",
        "no network",
        "drops",
        "false alarm",
        "error",
        "fault",
        "full",
        "not recording",
        "can t find",
        "cannot find",
        "password",
        "forgot",
        "echo",
        "overload",
        "low battery",
    ])
}

pub fn since() -> Vec<String> {
    list(&[
        "depuis",
        "ce matin",
        "hier",
        "cette nuit",
        "la semaine derniere",
        "tout a l heure",
        "apres la mise a jour",
        "apres l orage",
        "since",
        "this morning",
        "yesterday",
        "last night",
        "last week",
        "after the update",
    ])
}

pub fn tried() -> Vec<String> {
    list(&[
        "j ai redemarre",
        "on a redemarre",
        "j ai deja",
        "on a deja",
        "j ai essaye",
        "on a essaye",
        "j ai teste",
        "on a teste",
        "j ai change",
        "on a change",
        "j ai verifie",
        "on a verifie",
        "j ai debranche",
        "i restarted",
        "i rebooted",
        "we restarted",
        "i tried",
        "we tried",
        "i already",
        "we already",
        "i checked",
        "we checked",
        "i replaced",
        "i swapped",
    ])
}

/// Function words that tell French from English.
pub const FRENCH: &[&str] = &[
    "le", "la", "les", "de", "des", "du", "un", "une", "est", "et", "ne", "pas", "plus", "je", "j",
    "il", "elle", "on", "sur", "avec", "pour", "que", "qui", "ca", "c", "mais", "au", "aux", "mon",
    "ma", "nous", "vous", "depuis", "quand", "dans",
];
pub const ENGLISH: &[&str] = &[
    "the", "a", "an", "is", "are", "and", "not", "no", "i", "it", "with", "for", "that", "this",
    "my", "we", "you", "of", "to", "in", "when", "since", "doesn", "won", "can", "t", "but",
];
