//! A French/English domain glossary: each concept (a fault, a piece of
//! equipment, an action) with the words technicians and articles use for it
//! in both languages. Applied to the lexical side of both the articles (at
//! import) and the query, it adds one language-neutral token per concept
//! found, so "la gâche ne se déverrouille pas" meets an English article
//! about an electric strike that does not release. The words themselves
//! stay: same-language matches keep their full weight.
//!
//! The built-in table is the domain's vocabulary, written from the
//! equipment and its faults, not from any evaluation set; a pipeline adds
//! words or concepts under `[capabilities.knowledge.glossary]`.

use std::collections::BTreeMap;

/// Concept -> words in both languages (several words: a phrase).
const BUILTIN: &[(&str, &[&str])] = &[
    // Equipment.
    (
        "camera",
        &[
            "caméra", "camera", "cam", "dôme", "dome", "bullet", "objectif", "lens",
        ],
    ),
    (
        "recorder",
        &["enregistreur", "nvr", "dvr", "recorder", "magnétoscope"],
    ),
    (
        "disk",
        &[
            "disque",
            "disque dur",
            "hdd",
            "hard drive",
            "hard disk",
            "drive",
            "disk",
        ],
    ),
    ("switch", &["switch", "commutateur"]),
    ("poe", &["poe", "injecteur", "injector"]),
    ("router", &["routeur", "router", "box", "modem"]),
    (
        "app",
        &[
            "application",
            "appli",
            "app",
            "smartphone",
            "téléphone",
            "portable",
            "phone",
            "mobile",
        ],
    ),
    ("cloud", &["cloud", "portail", "portal"]),
    (
        "subscription",
        &["abonnement", "forfait", "offre", "subscription", "plan"],
    ),
    ("account", &["compte", "account"]),
    (
        "monitor",
        &[
            "moniteur",
            "écran",
            "monitor",
            "screen",
            "display",
            "affichage",
            "télé",
            "tv",
        ],
    ),
    ("hdmi", &["hdmi", "vga"]),
    (
        "analog",
        &["analogique", "analog", "coaxial", "coaxiale", "coax"],
    ),
    (
        "ptz",
        &[
            "ptz",
            "motorisée",
            "pan",
            "tilt",
            "zoom",
            "joystick",
            "preset",
            "présélection",
        ],
    ),
    ("usb", &["clé usb", "usb", "clé", "stick", "key"]),
    (
        "fiber",
        &[
            "fibre",
            "fiber",
            "fibre optique",
            "optique",
            "sfp",
            "convertisseur",
            "converter",
        ],
    ),
    (
        "wireless",
        &[
            "sans fil",
            "wireless",
            "radio",
            "pont radio",
            "bridge",
            "antenne",
            "antenna",
            "point à point",
            "point to point",
        ],
    ),
    ("badge", &["badge", "carte", "card", "tag"]),
    ("reader", &["lecteur", "reader"]),
    (
        "controller",
        &[
            "contrôleur",
            "controller",
            "contrôle d'accès",
            "access control",
            "centrale d'accès",
        ],
    ),
    (
        "strike",
        &[
            "gâche",
            "gâche électrique",
            "strike",
            "electric strike",
            "door strike",
        ],
    ),
    (
        "maglock",
        &[
            "ventouse",
            "ventousse",
            "électroaimant",
            "maglock",
            "magnetic lock",
            "magnet lock",
        ],
    ),
    (
        "door",
        &[
            "porte",
            "door",
            "issue de secours",
            "emergency exit",
            "exit door",
        ],
    ),
    ("gate", &["portail", "gate", "barrière"]),
    (
        "exit-button",
        &[
            "bouton de sortie",
            "exit button",
            "bouton poussoir",
            "push button",
        ],
    ),
    (
        "contact",
        &[
            "contact",
            "contact magnétique",
            "door contact",
            "reed",
            "aimant",
            "magnet",
        ],
    ),
    (
        "alarm-panel",
        &[
            "centrale",
            "centrale d'alarme",
            "alarm panel",
            "panel",
            "alarme",
            "alarm",
            "intrusion",
        ],
    ),
    ("keypad", &["clavier", "keypad"]),
    ("battery", &["batterie", "pile", "battery"]),
    ("siren", &["sirène", "siren", "flash", "strobe"]),
    (
        "detector",
        &[
            "détecteur",
            "capteur",
            "detector",
            "sensor",
            "pir",
            "volumétrique",
            "infrarouge passif",
        ],
    ),
    (
        "remote-control",
        &["télécommande", "remote control", "key fob", "fob"],
    ),
    (
        "transmitter",
        &[
            "transmetteur",
            "transmitter",
            "communicator",
            "communicateur",
            "dialler",
            "dialer",
        ],
    ),
    (
        "gsm",
        &[
            "gsm",
            "sim",
            "carte sim",
            "sim card",
            "réseau mobile",
            "cellular",
        ],
    ),
    (
        "monitoring",
        &[
            "télésurveillance",
            "monitoring",
            "monitoring centre",
            "monitoring center",
            "centre de télésurveillance",
            "receiving centre",
            "monitoring station",
        ],
    ),
    (
        "intercom",
        &[
            "interphone",
            "visiophone",
            "intercom",
            "door station",
            "platine",
            "portier",
            "platine de rue",
        ],
    ),
    ("visitor", &["visiteur", "visitor"]),
    ("ups", &["onduleur", "ups"]),
    (
        "power",
        &[
            "alimentation",
            "alim",
            "power",
            "power supply",
            "tension",
            "voltage",
            "coffret",
            "secteur",
            "mains",
        ],
    ),
    ("fuse", &["fusible", "fuse", "disjoncteur", "breaker"]),
    (
        "cable",
        &[
            "câble",
            "cable",
            "rj45",
            "sertissage",
            "crimp",
            "connecteur",
            "connector",
        ],
    ),
    ("network", &["réseau", "network", "lan"]),
    ("vlan", &["vlan", "trunk"]),
    (
        "firmware",
        &[
            "firmware",
            "micrologiciel",
            "mise à jour",
            "update",
            "upgrade",
            "flash",
        ],
    ),
    ("ddns", &["ddns", "dyndns", "dns", "nom de domaine"]),
    (
        "port-forwarding",
        &[
            "redirection de ports",
            "redirection de port",
            "port forwarding",
            "nat",
        ],
    ),
    (
        "public-ip",
        &[
            "ip publique",
            "adresse publique",
            "public ip",
            "public address",
        ],
    ),
    ("ip-address", &["adresse ip", "ip", "ip address", "adresse"]),
    ("firewall", &["pare-feu", "firewall"]),
    ("server", &["serveur", "server"]),
    ("wifi", &["wifi", "wi-fi"]),
    (
        "mobile-data",
        &[
            "4g",
            "3g",
            "5g",
            "données mobiles",
            "mobile data",
            "cellular data",
        ],
    ),
    (
        "software",
        &["logiciel", "software", "vms", "client software"],
    ),
    // Faults and what is seen.
    (
        "offline",
        &[
            "hors ligne",
            "déconnecté",
            "offline",
            "disconnected",
            "injoignable",
            "unreachable",
        ],
    ),
    ("ping", &["ping"]),
    (
        "recording",
        &[
            "enregistrement",
            "enregistre",
            "enregistrer",
            "recording",
            "record",
            "footage",
            "playback",
            "lecture",
            "timeline",
            "frise",
            "clip",
        ],
    ),
    (
        "live",
        &[
            "en direct",
            "direct",
            "live",
            "visualisation",
            "visu",
            "live view",
        ],
    ),
    (
        "storage-full",
        &[
            "plein",
            "saturé",
            "espace insuffisant",
            "full",
            "no space",
            "out of space",
            "storage full",
        ],
    ),
    ("night", &["nuit", "night", "soir", "evening", "nocturne"]),
    ("infrared", &["infrarouge", "ir", "infrared"]),
    ("black", &["noir", "noire", "black", "dark", "sombre"]),
    (
        "white",
        &[
            "blanc",
            "blanche",
            "laiteuse",
            "white",
            "washed out",
            "glare",
            "halo",
            "reflet",
            "reflection",
            "voile",
        ],
    ),
    (
        "blurry",
        &[
            "flou",
            "floue",
            "blurry",
            "focus",
            "mise au point",
            "out of focus",
            "pas net",
            "pas nette",
            "voilée",
        ],
    ),
    (
        "reboot",
        &[
            "redémarre",
            "redémarrer",
            "redémarrage",
            "reboot",
            "rebooting",
            "restart",
            "restarting",
            "reboote",
            "relance",
            "se relance",
        ],
    ),
    ("boot-loop", &["en boucle", "boot loop", "over and over"]),
    (
        "password",
        &[
            "mot de passe",
            "password",
            "identifiants",
            "login",
            "credentials",
        ],
    ),
    (
        "reset",
        &[
            "réinitialisation",
            "réinitialiser",
            "reset",
            "retour usine",
            "factory",
        ],
    ),
    (
        "conflict",
        &[
            "conflit",
            "conflict",
            "même adresse",
            "même ip",
            "same ip",
            "same address",
            "doublon",
            "duplicate",
        ],
    ),
    (
        "intermittent",
        &[
            "intermittent",
            "par intermittence",
            "apparaît et disparaît",
            "comes and goes",
            "flaky",
            "instable",
            "unstable",
        ],
    ),
    (
        "time",
        &[
            "heure",
            "time",
            "horodatage",
            "timestamp",
            "date",
            "clock",
            "horloge",
            "heure d'été",
            "daylight saving",
            "fuseau",
            "time zone",
        ],
    ),
    ("motion", &["mouvement", "motion", "détection", "detection"]),
    ("notification", &["alerte", "notification", "push", "alert"]),
    (
        "false-alarm",
        &[
            "fausse alarme",
            "false alarm",
            "intempestif",
            "intempestive",
            "nuisance",
            "pour rien",
            "for no reason",
            "sans raison",
        ],
    ),
    (
        "vegetation",
        &[
            "arbre",
            "tree",
            "végétation",
            "vegetation",
            "pluie",
            "rain",
            "insecte",
            "insect",
            "araignée",
            "spider",
            "toile",
            "cobweb",
        ],
    ),
    (
        "choppy",
        &[
            "saccade",
            "saccadé",
            "saccadée",
            "fige",
            "figée",
            "freeze",
            "frozen",
            "lag",
            "rame",
            "stutter",
            "choppy",
            "pixelisé",
            "pixelisée",
            "pixelated",
            "buffering",
        ],
    ),
    (
        "loading",
        &[
            "chargement",
            "loading",
            "charge dans le vide",
            "spinning",
            "times out",
            "timeout",
        ],
    ),
    (
        "no-signal",
        &[
            "pas de signal",
            "no signal",
            "perte vidéo",
            "video loss",
            "sans signal",
            "écran bleu",
            "blue screen",
        ],
    ),
    ("add", &["ajouter", "ajout", "add", "adding", "intégrer"]),
    ("boot", &["logo", "démarrage", "boot", "startup", "splash"]),
    (
        "export",
        &[
            "export",
            "exporter",
            "sauvegarde",
            "sauvegarder",
            "copie",
            "copy",
            "backup",
        ],
    ),
    ("police", &["police", "gendarmerie"]),
    (
        "remote-access",
        &[
            "à distance",
            "remote",
            "remotely",
            "de l'extérieur",
            "from outside",
            "from home",
            "depuis chez lui",
        ],
    ),
    (
        "verification",
        &[
            "code de vérification",
            "verification code",
            "double authentification",
            "two-factor",
            "2fa",
            "sms",
        ],
    ),
    (
        "locked",
        &["verrouillé", "bloqué", "locked", "blocked", "locked out"],
    ),
    (
        "expired",
        &[
            "expiré",
            "suspendu",
            "expired",
            "suspended",
            "renouveler",
            "renew",
            "fin du mois",
        ],
    ),
    (
        "payment",
        &[
            "paiement",
            "payment",
            "carte bancaire",
            "payé",
            "paid",
            "refusé le paiement",
            "declined",
        ],
    ),
    (
        "transfer",
        &["transférer", "transfert", "transfer", "déplacer", "move"],
    ),
    (
        "replace",
        &[
            "remplacer",
            "remplacé",
            "remplacement",
            "replace",
            "replaced",
            "replacement",
            "swap",
            "swapped",
            "échange",
            "échangé",
            "rma",
        ],
    ),
    (
        "together",
        &[
            "plusieurs",
            "several",
            "ensemble",
            "together",
            "en même temps",
            "at once",
            "d'un coup",
            "all at once",
        ],
    ),
    (
        "overload",
        &[
            "surcharge",
            "surchargé",
            "overload",
            "overloaded",
            "budget",
            "dépassé",
            "exceeded",
            "100 %",
            "100 percent",
            "cent pour cent",
        ],
    ),
    ("port", &["port"]),
    ("led", &["led", "voyant", "diode", "light", "lumière"]),
    ("amber", &["orange", "amber"]),
    ("red", &["rouge", "red"]),
    ("green", &["vert", "verte", "green"]),
    (
        "blinking",
        &["clignote", "clignotent", "blink", "blinking", "flashing"],
    ),
    ("link", &["lien", "link", "liaison"]),
    (
        "speed",
        &[
            "10/100",
            "10 mbit",
            "mbit",
            "megabit",
            "mégas",
            "vitesse",
            "speed",
            "négocie",
            "negotiates",
        ],
    ),
    (
        "loop",
        &[
            "boucle réseau",
            "network loop",
            "tempête de broadcast",
            "broadcast storm",
            "broadcast",
        ],
    ),
    ("slow", &["lent", "lente", "slow"]),
    (
        "it-department",
        &[
            "informatique",
            "service informatique",
            "it department",
            "it team",
        ],
    ),
    ("building", &["bâtiment", "building"]),
    (
        "weak-signal",
        &[
            "faible",
            "weak",
            "signal faible",
            "weak signal",
            "rssi",
            "perd le signal",
            "losing signal",
        ],
    ),
    ("storm", &["orage", "tempête", "storm"]),
    (
        "refused",
        &[
            "refusé",
            "refusée",
            "rejected",
            "refused",
            "denied",
            "accès refusé",
            "access denied",
        ],
    ),
    (
        "release",
        &[
            "déverrouille",
            "déverrouiller",
            "déverrouillage",
            "release",
            "unlock",
            "libère",
            "libérer",
            "ouverture",
        ],
    ),
    (
        "unlocked",
        &[
            "déverrouillée",
            "unlocked",
            "libre passage",
            "free passage",
            "reste ouverte",
            "stays open",
        ],
    ),
    (
        "forced",
        &[
            "forcée",
            "forcé",
            "en forçant",
            "forced",
            "force",
            "tirant",
            "pull",
        ],
    ),
    (
        "held-open",
        &[
            "maintenue ouverte",
            "held open",
            "porte ouverte",
            "door open",
        ],
    ),
    (
        "arm",
        &[
            "armer",
            "mise en marche",
            "mise en service",
            "mettre en marche",
            "arm",
            "arming",
        ],
    ),
    (
        "disarm",
        &["désarmer", "désarmée", "désarmé", "disarm", "disarmed"],
    ),
    ("zone", &["zone"]),
    ("open", &["ouverte", "ouvert", "open"]),
    ("closed", &["fermée", "fermé", "closed", "shut"]),
    ("window", &["fenêtre", "window"]),
    (
        "silent",
        &[
            "muette",
            "muet",
            "silencieux",
            "pas de son",
            "silent",
            "no sound",
        ],
    ),
    (
        "tamper",
        &["autoprotection", "tamper", "capot", "cover", "boîtier"],
    ),
    (
        "non-stop",
        &[
            "sans arrêt",
            "won't stop",
            "ne s'arrête pas",
            "non-stop",
            "continu",
            "continuous",
        ],
    ),
    ("supervision", &["supervision"]),
    ("jamming", &["brouillage", "jamming"]),
    (
        "periodic-test",
        &[
            "test cyclique",
            "test périodique",
            "periodic test",
            "polling",
        ],
    ),
    (
        "installer-code",
        &[
            "code installateur",
            "installer code",
            "code maître",
            "master code",
            "programmation",
            "programming",
        ],
    ),
    (
        "ring",
        &["sonne", "sonnerie", "ring", "ringing", "appel", "call"],
    ),
    (
        "echo",
        &[
            "écho",
            "echo",
            "larsen",
            "feedback",
            "grésille",
            "grésillement",
            "crackling",
            "bruit de fond",
            "background noise",
        ],
    ),
    ("beep", &["bipe", "bip", "beep", "beeping"]),
    (
        "dead",
        &[
            "mort",
            "éteint",
            "éteinte",
            "dead",
            "no lights",
            "aucune réaction",
        ],
    ),
    (
        "cleaning",
        &[
            "nettoyé",
            "nettoyage",
            "nettoyer",
            "clean",
            "cleaning",
            "cleaned",
        ],
    ),
    ("new", &["nouveau", "nouvelle", "new"]),
];

/// Concept tokens start with this, so no real word collides with one.
const PREFIX: &str = "zzc";

pub struct Glossary {
    /// (token, spellings as normalised words), longest spelling first.
    terms: Vec<(String, Vec<String>)>,
    /// First word of a spelling -> indexes into `terms`: a text is scanned
    /// once, not once per spelling (coverage runs on every hit's article).
    by_first_word: std::collections::HashMap<String, Vec<usize>>,
    /// Identifies the table, for the store's content hash.
    fingerprint: String,
}

impl Default for Glossary {
    fn default() -> Self {
        Glossary::new(&BTreeMap::new(), true)
    }
}

impl Glossary {
    /// The built-in table (unless `builtin` is false) with `extra` added:
    /// more words for a known concept, or new concepts.
    pub fn new(extra: &BTreeMap<String, Vec<String>>, builtin: bool) -> Self {
        let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if builtin {
            for (concept, words) in BUILTIN {
                table
                    .entry(concept.to_string())
                    .or_default()
                    .extend(words.iter().map(|w| w.to_string()));
            }
        }
        for (concept, words) in extra {
            table
                .entry(concept.clone())
                .or_default()
                .extend(words.iter().cloned());
        }
        let mut terms = Vec::new();
        for (concept, words) in &table {
            let token = format!(
                "{PREFIX}{}",
                concept
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_lowercase()
            );
            for w in words {
                let split = words_of(w);
                if !split.is_empty() {
                    terms.push((token.clone(), split));
                }
            }
        }
        terms.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.1.cmp(&b.1)));
        terms.dedup();
        let mut h = sha2::Sha256::default();
        sha2::Digest::update(&mut h, format!("{terms:?}").as_bytes());
        let fingerprint = hex::encode(&sha2::Digest::finalize(h)[..6]);
        let mut by_first_word: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, (_, spelling)) in terms.iter().enumerate() {
            by_first_word
                .entry(spelling[0].clone())
                .or_default()
                .push(i);
        }
        Glossary {
            terms,
            by_first_word,
            fingerprint,
        }
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The concept tokens found in `text`, each once, in order.
    pub fn concepts(&self, text: &str) -> Vec<&str> {
        let words = words_of(text);
        let mut found: Vec<&str> = Vec::new();
        for (at, word) in words.iter().enumerate() {
            let Some(candidates) = self.by_first_word.get(word) else {
                continue;
            };
            for &i in candidates {
                let (token, spelling) = &self.terms[i];
                if words[at..].starts_with(spelling) && !found.contains(&token.as_str()) {
                    found.push(token);
                }
            }
        }
        found
    }

    /// `text` with its concept tokens appended: what the lexical side indexes.
    pub fn annotate(&self, text: &str) -> String {
        let concepts = self.concepts(text);
        if concepts.is_empty() {
            return text.to_string();
        }
        format!("{text}\n{}", concepts.join(" "))
    }
}

/// Lower case, accents folded, split on anything but letters and digits,
/// and a plural `s`/`x` dropped, so "Caméras" and "camera" are one word.
fn words_of(text: &str) -> Vec<String> {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        folded.push(match c {
            'à' | 'á' | 'â' | 'ä' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            '%' => '%',
            c if c.is_alphanumeric() => c,
            _ => ' ',
        });
    }
    folded
        .split_whitespace()
        .map(|w| {
            let n = w.chars().count();
            if n > 3 && (w.ends_with('s') || w.ends_with('x')) {
                w[..w.len() - 1].to_string()
            } else {
                w.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_and_english_meet_on_one_token() {
        let g = Glossary::default();
        let fr = g.concepts("la gâche ne se déverrouille pas");
        let en = g.concepts("The electric strike does not release");
        assert!(
            fr.contains(&"zzcstrike") && en.contains(&"zzcstrike"),
            "{fr:?} {en:?}"
        );
        assert!(fr.contains(&"zzcrelease") && en.contains(&"zzcrelease"));
        // Plurals, case and accents do not matter.
        assert_eq!(g.concepts("CAMÉRAS"), g.concepts("camera"));
        // Whole words only: "ir" is not found inside "tirer".
        assert!(!g.concepts("tirer").contains(&"zzcinfrared"));
    }

    #[test]
    fn annotate_keeps_the_words_and_adds_concepts() {
        let g = Glossary::default();
        let a = g.annotate("l'onduleur bipe");
        assert!(a.starts_with("l'onduleur bipe\n"), "{a}");
        assert!(a.contains("zzcups") && a.contains("zzcbeep"));
        assert_eq!(g.annotate("bonjour"), "bonjour");
    }

    #[test]
    fn a_pipeline_adds_words_and_concepts() {
        let mut extra = BTreeMap::new();
        extra.insert("strike".to_string(), vec!["têtière".to_string()]);
        extra.insert("turnstile".to_string(), vec!["tourniquet".to_string()]);
        let g = Glossary::new(&extra, true);
        assert_eq!(g.concepts("la têtière"), ["zzcstrike"]);
        assert_eq!(g.concepts("le tourniquet"), ["zzcturnstile"]);
        assert_ne!(g.fingerprint(), Glossary::default().fingerprint());
        assert!(Glossary::new(&extra, false).concepts("gâche").is_empty());
    }
}
