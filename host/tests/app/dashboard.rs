//! The technician dashboard and the ops page in real headless Chromium
//! (`support::browser`), against the real binary and the shipped knowledge
//! base.

use crate::support;
use crate::support::browser::{
    CHROMEDRIVER, CHROMIUM, Driver, click, screenshot, send, text_of, texts, wait_count, wait_for,
    wait_text, wait_ticks,
};
use crate::support::server::{Server, TOKEN};
use fantoccini::Locator;
use serde_json::Value;
use std::time::Duration;

fn ready() -> bool {
    support::fixture_present(support::models_present(), "the models (`callpipe models`)")
        && support::fixture_present(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "Debian's chromium and chromium-driver",
        )
}

/// The agent's whole flow, live over SSE, then with polling only:
/// a vague message brings the clarifying question on the left, the details
/// bring the solution card with its confidence, nothing shows twice, the
/// call ends after a confirmation, and the UI switches to English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_then_shows_the_solution() {
    if !ready() {
        return;
    }
    let server = Server::start_pipeline(
        &[],
        &support::default_pipeline_with("browser", |t| {
            support::solutions_floor(t, support::TEST_FLOOR)
        }),
    );
    let driver = Driver::start().await;
    let browser = driver.browser().await;

    for transport in ["sse", "poll"] {
        let page = match transport {
            "poll" => format!("/demo/technician?token={TOKEN}&transport=poll"),
            _ => format!("/demo/technician?token={TOKEN}"),
        };
        browser.goto(&server.http(&page)).await.expect("load");
        // A fresh session each round (the page keeps the last one).
        wait_for(&browser, "#new-session")
            .await
            .click()
            .await
            .expect("new session");
        let title = wait_for(&browser, "h1").await.text().await.unwrap();
        assert!(title.contains("Assistance technicien"), "{title}");
        // The assistant opens the conversation with the original's words.
        wait_for(&browser, "#chat li.msg.greeting").await;
        assert_eq!(
            texts(&browser, "#chat li.msg.greeting .text").await,
            ["Bonjour ! Quel est le problème rencontré ?"]
        );

        send(&browser, "Bonjour, j'ai un souci sur le site.").await;
        let question = wait_for(&browser, "#chat li.msg.bot").await;
        let asked = question.text().await.unwrap();
        assert!(asked.contains("équipement"), "{asked}");
        let mine = wait_count(&browser, "#chat li.msg.technician:not(.pending)", 1).await;
        assert!(mine[0].contains("souci sur le site"), "{mine:?}");
        // The Diagnostic block follows the analysis: nothing known yet.
        let missing = "#diagnostic dd[data-field=diagMissing]";
        let said = wait_for(&browser, missing).await.text().await.unwrap();
        assert!(said.contains("équipement"), "{transport}: {said}");

        send(
            &browser,
            "C'est la caméra du parking, elle est éteinte depuis qu'on a remplacé le switch PoE \
             ce matin, plus aucune lumière et elle ne répond pas au ping.",
        )
        .await;
        let card = wait_for(&browser, "#cards article.card").await;
        let card_text = card.text().await.unwrap();
        // ... and now the equipment and enough context.
        let mut equipment = String::new();
        for _ in 0..100 {
            equipment = texts(&browser, "#diagnostic dd[data-field=diagEquipment]")
                .await
                .concat();
            if equipment.contains("camera") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(equipment.contains("camera"), "{transport}: {equipment}");
        assert!(
            texts(&browser, "#diagnostic dd[data-field=diagMissing]")
                .await
                .concat()
                .starts_with("Contexte suffisant"),
            "{transport}"
        );
        let badge = card
            .find(Locator::Css(".conf"))
            .await
            .expect("confidence badge")
            .text()
            .await
            .unwrap();
        assert!(badge.starts_with("Confiance"), "{badge}");
        let percent: u32 = badge
            .trim_start_matches("Confiance")
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("a percentage: {badge}"));
        assert!((30..=100).contains(&percent), "{badge}");
        assert_eq!(
            card.attr("data-id")
                .await
                .unwrap()
                .as_deref()
                .map(|id| id.starts_with("kb-sample-001")),
            Some(true),
            "{card_text}"
        );
        assert!(
            card.find_all(Locator::Css("ol li")).await.unwrap().len() >= 2,
            "the fix as numbered steps: {card_text}"
        );
        // Live and polled copies never show twice: one question, two
        // technician lines, one card, even after two more rounds of the
        // polling clock (a poll still out when the stream opened, a late
        // or replayed event).
        wait_ticks(&browser, 2).await;
        wait_count(&browser, "#chat li.msg.bot", 1).await;
        wait_count(&browser, "#chat li.msg.technician", 2).await;
        wait_count(&browser, "#cards article.card", 1).await;
        let link = browser.find(Locator::Id("link")).await.unwrap();
        let expected = if transport == "poll" { "poll" } else { "live" };
        assert_eq!(
            link.attr("class").await.unwrap().as_deref(),
            Some(format!("link {expected}").as_str())
        );
        screenshot(&browser, &format!("dashboard-{transport}")).await;

        // Ending asks first; confirmed, the session is over.
        click(&browser, "end-btn").await;
        wait_for(&browser, "#confirm-end[open]").await;
        click(&browser, "confirm-end-ok").await;
        assert_eq!(
            wait_text(&browser, "call-status", "Terminé").await,
            "Terminé"
        );
    }

    // Without Twilio the page says chat only, and a bad number is refused
    // before anything is sent.
    let note = browser.find(Locator::Id("twilio-note")).await.unwrap();
    assert!(note.is_displayed().await.unwrap());
    assert!(
        !browser
            .find(Locator::Id("call-btn"))
            .await
            .unwrap()
            .is_enabled()
            .await
            .unwrap()
    );

    // English on request, kept across reloads.
    browser
        .find(Locator::Css(".lang button[data-lang=en]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .goto(&server.http("/demo/technician"))
        .await
        .expect("reload");
    let title = wait_for(&browser, "h1").await.text().await.unwrap();
    assert!(title.contains("Technician support"), "{title}");
    let badge = wait_for(&browser, "#cards .conf")
        .await
        .text()
        .await
        .unwrap();
    assert!(badge.starts_with("Confidence"), "{badge}");
    assert_eq!(
        texts(&browser, "#chat li.msg.greeting .text").await,
        ["Hello! What is the problem?"]
    );
    let labels = texts(&browser, "#diagnostic dt").await;
    assert_eq!(
        labels,
        [
            "Technician's language",
            "Equipment",
            "Issue",
            "Still missing"
        ],
        "{labels:?}"
    );

    // The ops page lists the pipeline and the stages that ran.
    browser.goto(&server.http("/")).await.expect("ops page");
    wait_for(&browser, "#stages tr").await;
    let stages = wait_count(&browser, "#stages tr", 7).await;
    assert!(
        stages.iter().any(|s| s.starts_with("solutions")),
        "{stages:?}"
    );
    assert_eq!(text_of(&browser, "p-name").await, "technician-support");
    screenshot(&browser, "ops").await;

    browser.close().await.expect("close the browser");
}

/// With Twilio configured (a local stand-in for its REST API), the call
/// controls: a number that is not E.164 is refused on the page and never
/// sent; a good one places the call, whose status and timer show; mute
/// reaches the server; ending asks first and hangs up through Twilio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_placed_muted_and_ended_from_the_dashboard() {
    if !support::fixture_present(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "Debian's chromium and chromium-driver",
    ) {
        return;
    }
    let (api, log) = support::twilio::twilio_stand_in().await;
    let env = support::twilio::twilio_env(&api);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&pairs);
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&server.http(&format!("/demo/technician?token={TOKEN}&lang=fr")))
        .await
        .expect("load");
    click(&browser, "new-session").await;
    let call_btn = browser.find(Locator::Id("call-btn")).await.unwrap();
    assert!(call_btn.is_enabled().await.unwrap(), "Twilio is configured");
    assert!(
        !browser
            .find(Locator::Id("twilio-note"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );

    // Not E.164: refused on the page, nothing sent to Twilio.
    let phone = browser.find(Locator::Id("phone")).await.unwrap();
    phone.send_keys("06 12 34 56 78").await.unwrap();
    click(&browser, "call-btn").await;
    let error = wait_for(&browser, "#phone-error:not([hidden])").await;
    assert!(error.text().await.unwrap().contains("E.164"));
    wait_for(&browser, "#phone[aria-invalid=true]").await;
    assert!(log.lock().unwrap().is_empty(), "nothing reached Twilio");

    // A good number (spaces are fine) places the call.
    phone.clear().await.unwrap();
    phone.send_keys("+33 6 12 34 56 78").await.unwrap();
    browser
        .find(Locator::Id("tech-name"))
        .await
        .unwrap()
        .send_keys("Jeanne")
        .await
        .unwrap();
    click(&browser, "call-btn").await;
    assert_eq!(
        wait_text(&browser, "call-status", "En file").await,
        "En file",
        "Twilio's `queued`, in French"
    );
    {
        let seen = log.lock().unwrap();
        let placed = seen
            .iter()
            .find(|s| s.path.ends_with("/Calls.json"))
            .expect("call placed");
        assert!(
            placed.form.contains(&("To".into(), "+33612345678".into())),
            "{placed:?}"
        );
    }
    assert!(
        texts(&browser, "#phone[aria-invalid]").await.is_empty(),
        "a good number is no longer marked"
    );
    assert_eq!(
        wait_text(&browser, "call-line", "Appel en cours…").await,
        "Appel en cours…"
    );
    // Ringing is not talking: the timer waits for the technician to answer
    // (the page renders the timer's state with the status it just showed).
    wait_for(&browser, "#timer[data-state=waiting]").await;
    assert_eq!(text_of(&browser, "timer").await, "00:00", "no answer yet");
    support::twilio::post_status(&server, "in-progress").await;
    assert_eq!(
        wait_text(
            &browser,
            "call-line",
            "Appel connecté - Transcription en cours"
        )
        .await,
        "Appel connecté - Transcription en cours"
    );
    // From the answer on, the timer ticks every second.
    let mut timer = String::new();
    for _ in 0..50 {
        timer = text_of(&browser, "timer").await;
        if timer != "00:00" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        timer.starts_with("00:0") && timer != "00:00",
        "the timer runs: {timer}"
    );

    // Mute reaches the server.
    let session = text_of(&browser, "session-id").await;
    click(&browser, "mute-btn").await;
    let mut muted = Value::Null;
    for _ in 0..50 {
        muted = server.get_json(&format!("/api/sessions/{session}")).await["muted"].clone();
        if muted == Value::Bool(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(muted, Value::Bool(true));
    let s = server.get_json(&format!("/api/sessions/{session}")).await;
    assert_eq!(s["technician_name"], "Jeanne", "{s}");
    screenshot(&browser, "dashboard-call").await;

    // Ending asks first, then hangs up through Twilio.
    click(&browser, "end-btn").await;
    wait_for(&browser, "#confirm-end[open]").await;
    click(&browser, "confirm-end-ok").await;
    assert_eq!(
        wait_text(&browser, "call-status", "Terminé").await,
        "Terminé"
    );
    let seen = log.lock().unwrap().clone();
    let ended = seen
        .iter()
        .find(|s| {
            s.path
                .ends_with("/Calls/CAfeed0000000000000000000000000001.json")
                && s.method == "POST"
        })
        .expect("hung up through Twilio");
    assert_eq!(
        ended.form,
        vec![("Status".to_string(), "completed".to_string())]
    );
    // The end: the statistics show and the timer stops.
    assert_eq!(
        wait_text(&browser, "call-line", "Appel terminé").await,
        "Appel terminé"
    );
    wait_for(&browser, "#end-stats dd[data-field=statDuration]").await;
    let stats = texts(&browser, "#end-stats dt").await;
    assert!(
        stats.iter().any(|s| s == "Segments du technicien"),
        "{stats:?}"
    );
    wait_for(&browser, "#timer[data-state=stopped]").await;
    let stopped = text_of(&browser, "timer").await;
    // The call lasted from the answer on, as the timer counted.
    let timer_s: u64 = stopped
        .split(':')
        .fold(0, |acc, p| acc * 60 + p.parse::<u64>().unwrap_or(0));
    let lasted = texts(&browser, "#end-stats dd[data-field=statDuration]")
        .await
        .concat();
    let digits: Vec<u64> = lasted
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect();
    let stats_s = digits.first().copied().unwrap_or(0) * 60 + digits.get(1).copied().unwrap_or(0);
    assert!(
        stats_s.abs_diff(timer_s) <= 1,
        "statistics {lasted} against the timer {stopped}"
    );
    screenshot(&browser, "dashboard-call-ended").await;

    // The next call without a reload: a new session, the timer at zero.
    click(&browser, "call-btn").await;
    let mut next = session.clone();
    for _ in 0..50 {
        next = text_of(&browser, "session-id").await;
        if next != session {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(next, session, "a new session for the next call");
    assert_eq!(
        wait_text(&browser, "call-status", "En file").await,
        "En file"
    );
    assert_eq!(text_of(&browser, "timer").await, "00:00");
    assert!(
        texts(&browser, "#end-stats:not([hidden])").await.is_empty(),
        "the last call's statistics are gone"
    );

    // The same life in English.
    browser
        .find(Locator::Css(".lang button[data-lang=en]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        wait_text(&browser, "call-line", "Calling…").await,
        "Calling…"
    );
    support::twilio::post_status(&server, "in-progress").await;
    assert_eq!(
        wait_text(
            &browser,
            "call-line",
            "Call connected - Transcription in progress"
        )
        .await,
        "Call connected - Transcription in progress"
    );
    browser.close().await.expect("close the browser");
}

/// With the language-model pipeline (a test-only model server): the
/// model's question shows in the chat, and once the agent ends the call
/// the summary appears under the solutions, live, and again after a
/// reload (from the server), in French and in English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_summary_shows_at_the_end_and_after_a_reload() {
    use crate::support::llm::{Behaviour, QUESTION, SUMMARY_PROBLEM, llm_pipeline, model_stand_in};
    if !ready() {
        return;
    }
    let model = model_stand_in(Behaviour::Good).await;
    let server = Server::start_pipeline(&[], &llm_pipeline("llm-browser", &model.url));
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&server.http(&format!("/demo/technician?token={TOKEN}&lang=fr")))
        .await
        .expect("load");
    wait_for(&browser, "#new-session")
        .await
        .click()
        .await
        .expect("new session");
    send(&browser, "Bonjour, j'ai un souci sur le site.").await;
    let asked = wait_count(&browser, "#chat li.msg.bot", 1).await;
    assert!(asked[0].contains(QUESTION), "{asked:?}");
    // Marked as the model's, from the server's field.
    let marked = wait_count(&browser, "#chat li.msg.bot.model-written", 1).await;
    assert!(
        marked[0].contains("Rédigé par le modèle de langage"),
        "{marked:?}"
    );
    assert!(
        !browser
            .find(Locator::Id("summary"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "no summary while the call goes on"
    );
    send(
        &browser,
        "C'est la caméra du parking, elle est éteinte depuis qu'on a remplacé le switch PoE \
         ce matin, plus aucune lumière et elle ne répond pas au ping.",
    )
    .await;
    // Two cards, the article and the model's answer from it; only the
    // answer is marked.
    wait_count(&browser, "#cards article.card", 2).await;
    let marked = texts(&browser, "#cards article.card.model-written .by-model").await;
    assert_eq!(marked, ["Rédigé par le modèle de langage : à vérifier"]);
    click(&browser, "end-btn").await;
    wait_for(&browser, "#confirm-end[open]").await;
    click(&browser, "confirm-end-ok").await;

    let problem = "#summary dd[data-field=sumProblem]";
    let shown = wait_for(&browser, problem).await.text().await.unwrap();
    assert_eq!(shown, SUMMARY_PROBLEM);
    assert_eq!(text_of(&browser, "summary-h").await, "Résumé de l'appel");
    let articles = texts(&browser, "#summary dd[data-field=sumArticles]").await;
    assert_eq!(articles, ["sample-001"]);
    screenshot(&browser, "summary").await;

    // Reopened later (the page keeps the session), in English.
    browser
        .goto(&server.http("/demo/technician?lang=en"))
        .await
        .expect("reload");
    let shown = wait_for(&browser, problem).await.text().await.unwrap();
    assert_eq!(shown, SUMMARY_PROBLEM);
    assert_eq!(
        wait_text(&browser, "summary-h", "Call summary").await,
        "Call summary"
    );
    browser.close().await.expect("close the browser");
}

/// Column 1 as the original describes it: what the agent types about the
/// customer and the site is sent to the server, stored with the session and
/// shown again when the session is reopened, here on another machine (no
/// local copy) through the original guide's address, in English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_one_is_stored_with_the_session_and_comes_back() {
    if !ready() {
        return;
    }
    let server = Server::start_pipeline(&[], &support::default_pipeline_with("column-one", |_| {}));
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&server.http(&format!("/demo/technician?token={TOKEN}&lang=fr")))
        .await
        .expect("load");
    click(&browser, "new-session").await;
    let typed = [
        ("customer", "Résidence Les Pins"),
        ("site", "Parking Nord"),
        ("equipment", "8 caméras IP, NVR 16 voies"),
        ("subscription", "Maintenance 24/7"),
        ("last-incident", "Switch PoE remplacé en mars"),
    ];
    for (id, text) in typed {
        browser
            .find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    send(&browser, "Bonjour, j'ai un souci sur le site.").await;
    wait_count(&browser, "#chat li.msg.bot", 1).await;
    let session = text_of(&browser, "session-id").await;
    let mut stored = Value::Null;
    for _ in 0..100 {
        stored = server.get_json(&format!("/api/sessions/{session}")).await["context"].clone();
        if stored["last_incident"] == "Switch PoE remplacé en mars" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored["customer"], "Résidence Les Pins", "{stored}");
    assert_eq!(stored["subscription"], "Maintenance 24/7", "{stored}");

    // Another machine: nothing kept locally; the old address, in English.
    browser
        .execute("localStorage.clear(); return true;", vec![])
        .await
        .expect("clear local storage");
    browser
        .goto(&server.http(&format!(
            "/demo/twilio-technician?session={session}&lang=en"
        )))
        .await
        .expect("the original guide's address");
    let title = wait_for(&browser, "h1").await.text().await.unwrap();
    assert!(title.contains("Technician support"), "{title}");
    for (id, text) in typed {
        let mut value = String::new();
        for _ in 0..100 {
            value = browser
                .find(Locator::Id(id))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .unwrap_or_default();
            if value == text {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(value, text, "#{id}");
    }
    let labels = texts(&browser, "#context-form label span").await;
    assert!(
        labels.iter().any(|l| l == "Last similar incident"),
        "{labels:?}"
    );
    screenshot(&browser, "column-one").await;
    browser.close().await.expect("close the browser");
}

/// A technician who speaks Spanish (here their line arrives tagged `es`, as
/// the transcriber tags a call whose language it detected): the agent's
/// page stays French, names the technician's language, marks the line as
/// Spanish, and the clarifying question is asked in Spanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spanish_speaking_technician_is_named_and_asked_in_spanish() {
    if !ready() {
        return;
    }
    let server = Server::start_pipeline(&[], &support::default_pipeline_with("spanish", |_| {}));
    let r = server
        .client()
        .post(server.http("/demo/send-demo-transcription"))
        .json(&serde_json::json!({
            "session_id": "llamada-es",
            "text": "Hola, buenos días, estoy en casa de un cliente y tengo un problema.",
            "language": "es",
        }))
        .send()
        .await
        .expect("send-demo-transcription answers");
    assert!(r.status().is_success(), "{}", r.status());
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&server.http(&format!(
            "/demo/technician?token={TOKEN}&lang=fr&session=llamada-es"
        )))
        .await
        .expect("load");
    let field = "#diagnostic dd[data-field=diagLanguage]";
    let mut language = String::new();
    for _ in 0..100 {
        language = texts(&browser, field).await.concat();
        if !language.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(language, "espagnol (es)");
    let question = wait_for(&browser, "#chat li.msg.bot").await;
    let asked = question.text().await.unwrap();
    assert!(asked.contains("¿En qué equipo"), "{asked}");
    assert!(asked.contains("Pregunta de aclaración"), "{asked}");
    let line = wait_for(&browser, "#chat li.msg.technician").await;
    assert_eq!(line.attr("lang").await.unwrap().as_deref(), Some("es"));
    assert_eq!(
        line.attr("data-language").await.unwrap().as_deref(),
        Some("es"),
        "the line is marked"
    );
    screenshot(&browser, "dashboard-spanish").await;
}

/// With a language model (a test-only model server), the Spanish line is
/// translated for the agent: shown under the line, marked as the model's,
/// while the page stays French; the translation is stored with the line
/// and comes back when the session is reopened from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spanish_technicians_lines_are_translated_for_the_agent() {
    use crate::support::llm::{Behaviour, TRANSLATION, llm_pipeline, model_stand_in};
    if !ready() {
        return;
    }
    let model = model_stand_in(Behaviour::Good).await;
    let server = Server::start_pipeline(&[], &llm_pipeline("translated", &model.url));
    let said = "Hola, estoy en casa de un cliente y la cámara del aparcamiento ya no se enciende.";
    let r = server
        .client()
        .post(server.http("/demo/send-demo-transcription"))
        .json(&serde_json::json!({"session_id": "traducida", "text": said, "language": "es"}))
        .send()
        .await
        .expect("send-demo-transcription answers");
    assert!(r.status().is_success(), "{}", r.status());
    let asked = model.requests();
    let translating = asked
        .iter()
        .find(|r| r.to_string().contains("You translate"))
        .unwrap_or_else(|| panic!("the model was asked to translate: {asked:#?}"));
    assert!(
        translating.to_string().contains("from Spanish into French"),
        "{translating}"
    );

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&server.http(&format!(
            "/demo/technician?token={TOKEN}&lang=fr&session=traducida"
        )))
        .await
        .expect("load");
    let shown = wait_for(
        &browser,
        "#chat li.msg.technician .translation:not([hidden])",
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(shown, format!("Traduit par le modèle : {TRANSLATION}"));
    let line = wait_for(&browser, "#chat li.msg.technician").await;
    assert_eq!(
        line.attr("data-language").await.unwrap().as_deref(),
        Some("es")
    );
    let original = wait_for(&browser, "#chat li.msg.technician .text").await;
    assert_eq!(original.text().await.unwrap(), said);
    screenshot(&browser, "dashboard-translated").await;
    browser.close().await.expect("close the browser");

    // Kept with the line in the store.
    let server = server.stop_and_restart();
    let session = server.get_json("/api/sessions/traducida").await;
    assert_eq!(
        session["transcript"][0]["translation"],
        serde_json::json!({"language": "fr", "text": TRANSLATION}),
        "{session:#}"
    );
}
