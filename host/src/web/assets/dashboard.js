// The technician-support dashboard: chat and call controls, live solutions.
// Live over Server-Sent Events; polls every 3 s when the stream is not open
// (or with ?transport=poll). Everything from the server is shown with
// textContent, never as HTML.
(() => {
  'use strict';

  const I18N = {
    fr: {
      title: 'Assistance technicien', offline: 'Hors ligne', live: 'En direct', polling: 'Actualisation 3 s',
      newSession: 'Nouvelle session', contextTitle: 'Technicien et site', techName: 'Nom du technicien',
      techId: 'Identifiant technicien', site: 'Site', equipment: 'Équipement installé', session: 'Session',
      customer: 'Client', subscription: 'Abonnement', lastIncident: 'Dernier incident similaire',
      status: 'Statut', segments: 'Segments', questions: 'Questions posées', solutions: 'Solutions proposées',
      callTitle: 'Appel et conversation', phone: 'Téléphone du technicien', call: 'Appeler', idle: "Pas d'appel",
      mute: 'Couper la voix', unmute: 'Rétablir la voix', end: 'Terminer', cancel: 'Annuler',
      chatOnly: "Twilio n'est pas configuré : conversation écrite uniquement.",
      technician: 'Technicien', agent: 'Agent', assistant: 'Assistant', send: 'Envoyer',
      messagePlaceholder: 'Message du technicien…', solutionsTitle: 'Solutions en direct',
      noSolutions: 'Les solutions de la base de connaissances apparaîtront ici.',
      confirmEnd: "Terminer l'appel avec le technicien ?", confidence: 'Confiance',
      badPhone: 'Numéro au format international E.164, par exemple +33612345678.',
      notConfigured: "Twilio n'est pas configuré sur ce serveur.", sources: 'Source',
      unauthorized: 'Accès refusé : rechargez la page avec le jeton (?token=…).',
      calling: 'Appel en cours…', connected: 'Appel connecté - Transcription en cours', ended: 'Appel terminé',
      statDuration: 'Durée', statSegments: 'Segments', statTechSegments: 'Segments du technicien',
      diagnosticTitle: 'Diagnostic', diagLanguage: 'Langue du technicien', diagEquipment: 'Équipement', diagIssue: 'Problème',
      diagMissing: 'À préciser', diagEnough: 'Contexte suffisant pour chercher une solution',
      slot: { equipment: 'équipement', symptom: 'symptôme', since: 'depuis quand', tried: 'déjà essayé' },
      summaryTitle: "Résumé de l'appel", sumProblem: 'Problème', sumEquipment: 'Équipement',
      sumTried: 'Déjà essayé', sumArticles: 'Articles', sumOutcome: 'Issue',
      modelWritten: 'Rédigé par le modèle de langage : à vérifier', translated: 'Traduit par le modèle',
      st: {
        created: 'Créée', queued: 'En file', initiated: 'Lancé', ringing: 'Sonnerie', 'in-progress': 'En cours',
        completed: 'Terminé', failed: 'Échec', busy: 'Occupé', 'no-answer': 'Pas de réponse',
        canceled: 'Annulé', interrupted: 'Interrompu',
      },
    },
    en: {
      title: 'Technician support', offline: 'Offline', live: 'Live', polling: 'Refreshing every 3 s',
      newSession: 'New session', contextTitle: 'Technician and site', techName: 'Technician name',
      techId: 'Technician ID', site: 'Site', equipment: 'Installed equipment', session: 'Session',
      customer: 'Customer', subscription: 'Subscription', lastIncident: 'Last similar incident',
      status: 'Status', segments: 'Segments', questions: 'Questions asked', solutions: 'Solutions provided',
      callTitle: 'Call and conversation', phone: "Technician's phone", call: 'Call', idle: 'No call',
      mute: 'Mute voice', unmute: 'Unmute voice', end: 'End', cancel: 'Cancel',
      chatOnly: 'Twilio is not configured: chat only.',
      technician: 'Technician', agent: 'Agent', assistant: 'Assistant', send: 'Send',
      messagePlaceholder: "Technician's message…", solutionsTitle: 'Live solutions',
      noSolutions: 'Knowledge-base solutions will appear here.',
      confirmEnd: 'End the call with the technician?', confidence: 'Confidence',
      badPhone: 'Use the international E.164 format, e.g. +33612345678.',
      notConfigured: 'Twilio is not configured on this server.', sources: 'Source',
      unauthorized: 'Access refused: reload the page with the token (?token=…).',
      calling: 'Calling…', connected: 'Call connected - Transcription in progress', ended: 'Call ended',
      statDuration: 'Duration', statSegments: 'Segments', statTechSegments: "Technician's segments",
      diagnosticTitle: 'Diagnostic', diagLanguage: "Technician's language", diagEquipment: 'Equipment', diagIssue: 'Issue',
      diagMissing: 'Still missing', diagEnough: 'Enough context to look for a solution',
      slot: { equipment: 'equipment', symptom: 'symptom', since: 'since when', tried: 'already tried' },
      summaryTitle: 'Call summary', sumProblem: 'Problem', sumEquipment: 'Equipment',
      sumTried: 'Already tried', sumArticles: 'Articles', sumOutcome: 'Outcome',
      modelWritten: 'Written by the language model: check it', translated: 'Translated by the model',
      st: {
        created: 'Created', queued: 'Queued', initiated: 'Initiated', ringing: 'Ringing', 'in-progress': 'In progress',
        completed: 'Completed', failed: 'Failed', busy: 'Busy', 'no-answer': 'No answer',
        canceled: 'Canceled', interrupted: 'Interrupted',
      },
    },
  };
  const TERMINAL = ['completed', 'failed', 'busy', 'no-answer', 'canceled', 'interrupted'];
  const ACTIVE = ['in-progress', 'ringing', 'queued', 'initiated'];
  const E164 = /^\+[1-9][0-9]{1,14}$/;
  const POLL_MS = 3000;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const twilio = document.body.dataset.twilio === 'true';

  const model = {
    lang: pickLang(),
    session: params.get('session') || localStorage.getItem('callpipe.session') || newId(),
    known: false, // the server has this session
    callSid: null,
    status: null,
    muted: false,
    since: null, // timer start (ms since epoch)
    until: null,
    chat: [], // {key, role, text, pending?, id?}
    cards: new Map(), // id -> suggestion (knowledge_base), newest last
    questions: 0,
    summary: null, // the end-of-call summary, once a stage wrote one
    diagnostic: null, // the latest analysis: equipment, issue, what is missing
    phoneCall: false, // this session is a phone call placed from this page
    stats: null, // the end-of-call statistics, once the call is over
    stream: null,
    lastEventId: null,
    forcePoll: params.get('transport') === 'poll',
  };

  function pickLang() {
    const l = params.get('lang') || localStorage.getItem('callpipe.lang') || 'fr';
    return I18N[l] ? l : 'fr';
  }
  function t(key) { return I18N[model.lang][key] ?? I18N.fr[key] ?? key; }
  function newId() {
    const b = new Uint8Array(8);
    crypto.getRandomValues(b);
    return 'web-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  // --- language -----------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = model.lang;
    document.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll('[data-i18n-placeholder]').forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
    document.querySelectorAll('.lang button').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.lang === model.lang)));
    document.title = 'callpipe — ' + t('title');
    render();
  }

  // --- server -------------------------------------------------------------
  async function api(method, path, body) {
    const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let doc = null;
    try { doc = await r.json(); } catch (_) { /* an empty or non-JSON answer */ }
    if (!r.ok) {
      const msg = r.status === 401 ? t('unauthorized') : (doc && (doc.detail || doc.error)) || r.statusText;
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return doc;
  }

  function showError(id, message) {
    const el = $(id);
    el.textContent = message || '';
    el.hidden = !message;
  }

  // --- what arrives ---------------------------------------------------------
  function transcriptKey(role, startMs, text) { return role + '|' + startMs + '|' + text; }

  // `fr-FR` -> `fr`.
  function primaryTag(tag) { return String(tag || '').split(/[-_]/)[0].toLowerCase(); }

  // The technician's language, named in the page's ("espagnol (es)").
  function languageName(tag) {
    const code = primaryTag(tag);
    if (!code) return '—';
    try {
      const name = new Intl.DisplayNames([model.lang], { type: 'language' }).of(code);
      return name && name !== code ? name + ' (' + code + ')' : code;
    } catch (_) { return code; }
  }

  function onTranscript(line) {
    const role = line.speaker_role === 'agent' ? 'agent' : 'technician';
    const key = transcriptKey(role, line.start_ms, line.text);
    if (model.chat.some((m) => m.key === key)) {
      if (line.translation) onLineTranslated(line);
      return;
    }
    // The server's copy replaces what this page showed while sending.
    const pending = model.chat.findIndex((m) => m.pending && m.role === role && m.text === line.text);
    const translation = line.translation ? { language: primaryTag(line.translation.language), text: line.translation.text } : null;
    const item = { key, role, text: line.text, language: primaryTag(line.language), translation };
    if (pending >= 0) model.chat[pending] = item; else model.chat.push(item);
    render();
  }

  // A stored line that carries its translation (the session's view).
  function onLineTranslated(line) {
    onTranslation({ speaker_role: line.speaker_role, start_ms: line.start_ms, original: line.text, ...line.translation });
  }

  // A line translated for the agent (a model's words): shown under it.
  function onTranslation(x) {
    const role = x.speaker_role === 'agent' ? 'agent' : 'technician';
    const item = model.chat.find((m) => m.key === transcriptKey(role, x.start_ms, x.original));
    if (!item || (item.translation && item.translation.text === x.text)) return;
    item.translation = { language: primaryTag(x.language), text: x.text };
    render();
  }

  function onSuggestion(s) {
    if (s.type === 'clarification_question') {
      const key = 'q|' + s.id;
      const at = model.chat.findIndex((m) => m.key === key);
      // The title says who worded it (a template, or the language model):
      // shown as the speaker, so a model's words never pass for ours.
      const language = primaryTag(s.language);
      // The server says whether the model wrote it (the host decides, from
      // the model's own replies): never left to the stage's title alone.
      // The original's endpoints (the chat answer, polling) do not carry the
      // mark: a copy from them keeps what the stream said.
      const byModel = 'model_written' in s ? s.model_written === true : at >= 0 && model.chat[at].byModel === true;
      if (at >= 0) { Object.assign(model.chat[at], { text: s.content, title: s.title, language, byModel }); } else {
        model.chat.push({ key, role: 'bot', text: s.content, id: s.id, title: s.title, language, byModel });
        model.questions += 1;
      }
    } else {
      const known = model.cards.get(s.id);
      if (!('model_written' in s) && known) s = { ...s, model_written: known.model_written };
      model.cards.delete(s.id); // a repeat moves to the top
      model.cards.set(s.id, s);
    }
    render();
  }

  // `at`: when it happened (seconds since the epoch), for the timer.
  function onStatus(status, at) {
    if (!status || status === model.status) return;
    model.status = status;
    const when = at ? at * 1000 : Date.now();
    // A call's timer starts when the technician answers, as the original's.
    const starts = model.phoneCall ? status === 'in-progress' : ACTIVE.includes(status);
    if (starts && !model.since) model.since = when;
    if (TERMINAL.includes(status) && !model.until) {
      model.until = when;
      showStatistics();
    }
    render();
  }

  // The end-of-call statistics, once the call is over.
  async function showStatistics() {
    const asked = model.session;
    try {
      const s = await api('GET', '/api/sessions/' + encodeURIComponent(asked));
      if (model.session !== asked) return;
      model.stats = s.statistics || null;
      if (s.summary) model.summary = s.summary;
      render();
    } catch (_) { /* shown on the next poll, if any */ }
  }

  // --- live stream, with polling as the fallback ---------------------------
  function goLive() {
    if (!model.known) return;
    if (model.forcePoll || !('EventSource' in window)) { setLink('poll'); return; }
    if (model.stream && model.stream.readyState !== EventSource.CLOSED) return;
    const url = '/api/sessions/' + encodeURIComponent(model.session) + '/events' +
      (model.lastEventId ? '?after=' + encodeURIComponent(model.lastEventId) : '');
    const es = new EventSource(url);
    model.stream = es;
    const seen = (e) => { if (e.lastEventId) model.lastEventId = e.lastEventId; };
    es.addEventListener('transcript', (e) => { seen(e); onTranscript(JSON.parse(e.data)); });
    es.addEventListener('suggestion', (e) => { seen(e); onSuggestion(JSON.parse(e.data)); });
    es.addEventListener('diagnostic', (e) => { model.diagnostic = JSON.parse(e.data); render(); });
    es.addEventListener('summary', (e) => { seen(e); model.summary = JSON.parse(e.data); render(); });
    es.addEventListener('translation', (e) => { seen(e); onTranslation(JSON.parse(e.data)); });
    es.addEventListener('status', (e) => { seen(e); const x = JSON.parse(e.data); onStatus(x.status, x.at); });
    es.onopen = () => setLink('live');
    es.onerror = () => {
      // The browser retries on its own; while it cannot, polling takes over.
      setLink('poll');
      if (es.readyState === EventSource.CLOSED) setTimeout(goLive, 10 * POLL_MS);
    };
  }

  function streaming() { return model.stream && model.stream.readyState === EventSource.OPEN; }

  async function poll() {
    // Rounds of the polling clock, live or not: whoever checks that a while
    // changes nothing waits for two of them instead of a fixed time.
    $('link').dataset.ticks = String(Number($('link').dataset.ticks || 0) + 1);
    if (!model.known || streaming()) return;
    // Over: one last look a few seconds on (the summary), then no more.
    if (model.until && Date.now() - model.until > 5 * POLL_MS) return;
    const asked = model.session;
    const id = encodeURIComponent(asked);
    try {
      const doc = await api('GET', '/demo/get-session-suggestions?limit=50&session_id=' + id);
      if (doc.status !== 'success' || model.session !== asked) return;
      (doc.transcriptions || []).slice().reverse().forEach((x) => onTranscript({
        speaker_role: x.speaker, text: x.text, start_ms: Math.round(x.start_time * 1000), language: x.language,
      }));
      (doc.suggestions || []).slice().reverse().forEach(onSuggestion);
      const s = await api('GET', '/api/sessions/' + id);
      if (model.session !== asked) return;
      onStatus(s.status);
      // The original's endpoint has neither translations nor the model's
      // mark: both come from the session's own view.
      (s.transcript || []).filter((l) => l.translation).forEach(onLineTranslated);
      (s.suggestions || []).filter((x) => 'model_written' in x).forEach(onSuggestion);
      if (s.summary) { model.summary = s.summary; render(); }
      if (s.diagnostic) { model.diagnostic = s.diagnostic; render(); }
      if (s.call_sid) model.callSid = s.call_sid;
      $('segments').textContent = s.total_segments ?? 0;
      // The stream may have opened while this poll was out.
      if (!streaming()) setLink('poll');
    } catch (e) {
      if (e.status === 401) showError('chat-error', e.message);
    }
  }

  function setLink(kind) {
    const el = $('link');
    el.className = 'link ' + ({ live: 'live', poll: 'poll' }[kind] || 'off');
    el.dataset.i18n = { live: 'live', poll: 'polling' }[kind] || 'offline';
    el.textContent = t(el.dataset.i18n);
  }

  // --- rendering ------------------------------------------------------------
  function render() {
    $('session-id').textContent = model.session;
    $('status-text').textContent = model.status ? (t('st')[model.status] || model.status) : '—';
    const badge = $('call-status');
    badge.textContent = model.status ? (t('st')[model.status] || model.status) : t('idle');
    badge.className = 'badge' + (TERMINAL.includes(model.status) ? ' ended' : ACTIVE.includes(model.status) ? ' active' : '');
    const live = model.known && !TERMINAL.includes(model.status);
    $('end-btn').disabled = !live;
    $('mute-btn').disabled = !live;
    $('mute-btn').setAttribute('aria-pressed', String(model.muted));
    $('mute-btn').textContent = t(model.muted ? 'unmute' : 'mute');
    $('questions-count').textContent = model.questions;
    $('solutions-count').textContent = model.cards.size;
    if (!model.forcePoll && streaming()) {
      $('segments').textContent = model.chat.filter((m) => m.role !== 'bot' && !m.pending).length;
    }
    tick();
    renderCallLine();
    renderChat();
    renderDiagnostic();
    renderCards();
    renderSummary();
  }

  // A block of labelled facts (dt/dd): hidden without data, rebuilt only
  // when the data or the language changed (a selection survives, and no
  // node goes stale under a reader).
  function renderFacts(box, list, data, rows) {
    box.hidden = !data;
    if (!data) { box.dataset.sig = ''; return; }
    const sig = model.lang + '|' + JSON.stringify(data);
    if (box.dataset.sig === sig) return;
    box.dataset.sig = sig;
    list.replaceChildren(...rows(data).flatMap(([k, v]) => {
      const dt = document.createElement('dt');
      dt.textContent = t(k);
      const dd = document.createElement('dd');
      dd.dataset.field = k;
      dd.textContent = String(v);
      return [dt, dd];
    }));
  }

  function renderDiagnostic() {
    const slots = t('slot');
    renderFacts($('diagnostic'), $('diagnostic-list'), model.diagnostic, (d) => [
      ['diagLanguage', languageName(d.language)],
      ['diagEquipment', (d.equipment || []).join(', ') || '—'],
      ['diagIssue', d.issue || '—'],
      ['diagMissing', d.sufficient ? t('diagEnough')
        : (d.missing || []).map((m) => slots[m] || m).join(', ') || '—'],
    ]);
  }

  function renderCallLine() {
    const line = $('call-line');
    const st = model.status;
    const key = !model.phoneCall || !st ? null
      : TERMINAL.includes(st) ? 'ended'
        : st === 'in-progress' ? 'connected'
          : ACTIVE.includes(st) ? 'calling' : null;
    line.hidden = !key;
    if (key) line.textContent = t(key);
    const stats = $('end-stats');
    renderFacts(stats, stats, model.stats, (x) => [
      ['statDuration', Math.floor((x.duration || 0) / 60) + ' min ' + String((x.duration || 0) % 60).padStart(2, '0') + ' s'],
      ['statSegments', x.segments ?? 0], ['statTechSegments', x.technician_segments ?? 0],
      ['solutions', x.solutions_provided ?? 0], ['questions', x.questions_asked ?? 0],
    ]);
  }

  function renderSummary() {
    renderFacts($('summary'), $('summary-list'), model.summary, (x) => [
      ['sumProblem', x.problem],
      ['sumEquipment', (x.equipment || []).join(', ')],
      ['sumTried', (x.steps_tried || []).join(' ; ')],
      ['sumArticles', (x.articles || []).join(', ')],
      ['sumOutcome', x.outcome],
    ].filter(([, v]) => v));
  }


  // Keyed: existing nodes stay in place (a selection or a hover survives an
  // update); only what changed is touched.
  const chatNodes = new Map();
  const cardNodes = new Map();

  function place(parent, nodes, items, keyOf, make, update) {
    const keep = new Set(items.map(keyOf));
    for (const [k, el] of nodes) if (!keep.has(k)) { el.remove(); nodes.delete(k); }
    let prev = null;
    for (const item of items) {
      const k = keyOf(item);
      let el = nodes.get(k);
      if (!el) { el = make(item); nodes.set(k, el); }
      update(el, item);
      const at = prev ? prev.nextSibling : parent.firstChild;
      if (at !== el) parent.insertBefore(el, at);
      prev = el;
    }
  }

  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }

  function renderChat() {
    const list = $('chat');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    // The assistant opens every conversation (the pipeline's chat greeting,
    // in the page's language); it is not a question and is never stored.
    const greeting = document.body.dataset['greeting' + (model.lang === 'en' ? 'En' : 'Fr')] || '';
    const shown = greeting ? [{ key: 'greeting', role: 'greeting', text: greeting }, ...model.chat] : model.chat;
    place(list, chatNodes, shown, (m) => m.key, (m) => {
      const li = document.createElement('li');
      if (m.id) li.dataset.id = m.id;
      const who = document.createElement('span');
      who.className = 'who';
      const text = document.createElement('span');
      text.className = 'text';
      const translation = document.createElement('span');
      translation.className = 'translation';
      translation.hidden = true;
      li.append(who, text, translation);
      return li;
    }, (li, m) => {
      const cls = 'msg ' + m.role + (m.pending ? ' pending' : '') + (m.byModel ? ' model-written' : '');
      if (li.className !== cls) li.className = cls;
      const who = t(m.role === 'bot' || m.role === 'greeting' ? 'assistant' : m.role);
      setText(li.firstChild, [who, m.title, m.byModel ? t('modelWritten') : ''].filter(Boolean).join(' · '));
      setText(li.children[1], m.text);
      // The translation a model made for the agent, marked as such.
      const tr = li.children[2];
      const shownTr = m.translation ? t('translated') + (model.lang === 'fr' ? ' : ' : ': ') + m.translation.text : '';
      setText(tr, shownTr);
      tr.hidden = !m.translation;
      if (m.translation && tr.lang !== m.translation.language) tr.lang = m.translation.language;
      // Said in another language than the page's: the browser reads and
      // hyphenates it as that language, and the agent sees which one.
      const other = m.language && m.language !== model.lang ? m.language : '';
      if ((li.lang || '') !== other) li.lang = other;
      if ((li.dataset.language || '') !== other) {
        if (other) li.dataset.language = other; else delete li.dataset.language;
      }
    });
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function renderCards() {
    const cards = Array.from(model.cards.values()).reverse();
    $('no-solutions').hidden = cards.length > 0;
    // A card is rebuilt only when the server sent it again with other words,
    // or the language changed.
    const sig = (c) => [model.lang, c.title, c.content, Math.round((Number(c.confidence) || 0) * 100), c.model_written === true].join('|');
    const make = (c) => { const el = card(c); el.dataset.sig = sig(c); return el; };
    place($('cards'), cardNodes, cards, (c) => c.id, make, (el, c) => {
      if (el.dataset.sig !== sig(c)) {
        el.replaceChildren(...card(c).childNodes);
        el.dataset.sig = sig(c);
      }
    });
  }

  function card(s) {
    const el = document.createElement('article');
    el.className = 'card';
    el.dataset.id = s.id;
    const head = document.createElement('header');
    const h = document.createElement('h3');
    h.textContent = s.title;
    const conf = document.createElement('span');
    const c = Math.max(0, Math.min(1, Number(s.confidence) || 0));
    conf.className = 'conf ' + (c >= 0.75 ? 'high' : c >= 0.5 ? 'medium' : 'low');
    conf.textContent = t('confidence') + ' ' + Math.round(c * 100) + ' %';
    head.append(h, conf);
    if (s.model_written === true) {
      el.classList.add('model-written');
      const by = document.createElement('span');
      by.className = 'by-model';
      by.textContent = t('modelWritten');
      head.append(by);
    }
    el.append(head, ...steps(s.content || ''));
    if (s.sources && s.sources.length) {
      const src = document.createElement('div');
      src.className = 'sources';
      src.textContent = t('sources') + ' : ' + s.sources.join(', ');
      el.append(src);
    }
    return el;
  }

  // Numbered lines become a list, "- " lines bullets, the rest paragraphs.
  function steps(content) {
    const out = [];
    let list = null;
    for (const raw of content.split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) { list = null; continue; }
      const num = line.match(/^\d+[.)]\s+(.*)$/);
      const bullet = line.match(/^[-*•]\s+(.*)$/);
      if (num || bullet) {
        const tag = num ? 'OL' : 'UL';
        if (!list || list.tagName !== tag) { list = document.createElement(tag); out.push(list); }
        const li = document.createElement('li');
        li.textContent = (num || bullet)[1];
        list.append(li);
      } else {
        list = null;
        const p = document.createElement('p');
        p.textContent = line;
        out.push(p);
      }
    }
    return out;
  }

  function tick() {
    const el = $('timer');
    // Whether the timer runs, as an attribute: what it shows next follows
    // from it (and a test reads it instead of watching the clock).
    el.dataset.state = !model.since ? 'waiting' : model.until ? 'stopped' : 'running';
    if (!model.since) { el.textContent = '00:00'; return; }
    const s = Math.max(0, Math.floor(((model.until || Date.now()) - model.since) / 1000));
    const mm = String(Math.floor(s / 60)).padStart(2, '0');
    const ss = String(s % 60).padStart(2, '0');
    el.textContent = (s >= 3600 ? Math.floor(s / 3600) + ':' : '') + mm + ':' + ss;
  }

  // --- actions --------------------------------------------------------------
  async function sendMessage(ev) {
    ev.preventDefault();
    const box = $('message');
    const text = box.value.trim();
    if (!text) return;
    // A session that ended stays ended: the next message starts a new one.
    if (model.known && TERMINAL.includes(model.status)) newSession();
    const role = $('speaker').value;
    model.chat.push({ key: 'pending|' + Date.now(), role, text, pending: true });
    box.value = '';
    render();
    showError('chat-error', '');
    $('send-btn').disabled = true;
    try {
      const doc = await api('POST', '/demo/send-demo-transcription', {
        session_id: model.session, text, speaker: role,
        language: model.lang === 'en' ? 'en-US' : 'fr-FR',
      });
      const first = !model.known;
      model.known = true;
      localStorage.setItem('callpipe.session', model.session);
      if (first && !model.since) model.since = Date.now();
      if (first) sendContext();
      (doc.suggestions || []).slice().reverse().forEach(onSuggestion);
      goLive();
      poll();
    } catch (e) {
      model.chat = model.chat.filter((m) => !(m.pending && m.text === text));
      box.value = text;
      showError('chat-error', e.message);
      render();
    } finally {
      $('send-btn').disabled = false;
      box.focus();
    }
  }

  async function startCall(ev) {
    ev.preventDefault();
    // The page is ready for the next call without a reload: a call after
    // one that ended is a new session (the technician's fields stay).
    if (model.known && TERMINAL.includes(model.status)) newSession();
    const phone = $('phone').value.replace(/[\s.-]/g, '');
    // Spaces, dots and dashes are how people write numbers; E.164 has none.
    if (!E164.test(phone)) {
      $('phone').setAttribute('aria-invalid', 'true');
      showError('phone-error', t('badPhone'));
      $('phone').focus();
      return;
    }
    $('phone').removeAttribute('aria-invalid');
    showError('phone-error', '');
    $('call-btn').disabled = true;
    try {
      const doc = await api('POST', '/twilio/initiate-call', {
        phone_number: phone, session_id: model.session,
        technician_id: $('tech-id').value.trim(), technician_name: $('tech-name').value.trim(),
      });
      model.known = true;
      model.phoneCall = true;
      model.callSid = doc.call_sid;
      sendContext();
      model.since = null;
      model.until = null;
      localStorage.setItem('callpipe.session', model.session);
      // Twilio's own status (queued...); `status` is the original's "initiated".
      onStatus(doc.twilio_status || doc.status);
      goLive();
    } catch (e) {
      showError('phone-error', e.status === 503 ? t('notConfigured') : e.message);
    } finally {
      $('call-btn').disabled = !twilio;
    }
  }

  async function endCall() {
    try {
      if (model.callSid) {
        await api('POST', '/twilio/end-call', { call_sid: model.callSid, session_id: model.session });
      }
      await api('POST', '/demo/end-demo-call', { session_id: model.session }).catch((e) => {
        if (e.status !== 404) throw e;
      });
      onStatus('completed');
    } catch (e) {
      showError('chat-error', e.message);
    }
  }

  async function toggleMute() {
    try {
      const doc = await api('POST', '/api/sessions/' + encodeURIComponent(model.session) + '/mute', { muted: !model.muted });
      model.muted = doc.muted;
      render();
    } catch (e) {
      showError('chat-error', e.message);
    }
  }

  function newSession() {
    if (model.stream) model.stream.close();
    Object.assign(model, {
      session: newId(), known: false, callSid: null, status: null, muted: false, since: null, until: null,
      chat: [], cards: new Map(), questions: 0, summary: null, stream: null, lastEventId: null,
      phoneCall: false, stats: null, diagnostic: null,
    });
    localStorage.removeItem('callpipe.session');
    setLink('off');
    render();
  }

  // --- wiring ---------------------------------------------------------------
  // The technician's name and id stay on this machine (they go with a call
  // placed from here); what the agent types about the customer and the
  // site is also sent to the server, stored with the session and shown
  // again when the session is reopened.
  const CONTEXT = { customer: 'customer', site: 'site', equipment: 'equipment', subscription: 'subscription', 'last-incident': 'last_incident' };
  for (const id of ['tech-name', 'tech-id', ...Object.keys(CONTEXT)]) {
    const el = $(id);
    el.value = localStorage.getItem('callpipe.' + id) || '';
    el.addEventListener('input', () => {
      localStorage.setItem('callpipe.' + id, el.value);
      if (id in CONTEXT) sendContextSoon();
    });
  }
  let contextTimer = null;
  function sendContextSoon() {
    clearTimeout(contextTimer);
    contextTimer = setTimeout(sendContext, 600);
  }
  async function sendContext() {
    if (!model.known) return; // sent once the session exists
    const body = {};
    for (const [id, key] of Object.entries(CONTEXT)) body[key] = $(id).value.trim();
    try {
      await api('POST', '/api/sessions/' + encodeURIComponent(model.session) + '/context', body);
    } catch (e) {
      if (e.status !== 404) showError('chat-error', e.message);
    }
  }
  function fillContext(ctx) {
    if (!ctx) return;
    for (const [id, key] of Object.entries(CONTEXT)) {
      if (typeof ctx[key] === 'string') {
        $(id).value = ctx[key];
        localStorage.setItem('callpipe.' + id, ctx[key]);
      }
    }
  }
  $('chat-form').addEventListener('submit', sendMessage);
  $('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('chat-form').requestSubmit(); }
  });
  $('call-form').addEventListener('submit', startCall);
  $('phone').addEventListener('input', () => {
    showError('phone-error', '');
    $('phone').removeAttribute('aria-invalid');
  });
  $('end-btn').addEventListener('click', () => {
    const dlg = $('confirm-end');
    if (typeof dlg.showModal === 'function') {
      dlg.returnValue = '';
      dlg.showModal();
    } else if (confirm(t('confirmEnd'))) {
      endCall();
    }
  });
  $('confirm-end').addEventListener('close', () => { if ($('confirm-end').returnValue === 'ok') endCall(); });
  $('mute-btn').addEventListener('click', toggleMute);
  $('new-session').addEventListener('click', newSession);
  document.querySelectorAll('.lang button').forEach((b) => b.addEventListener('click', () => {
    model.lang = b.dataset.lang;
    localStorage.setItem('callpipe.lang', model.lang);
    applyLang();
  }));
  $('call-btn').disabled = !twilio;
  $('twilio-note').hidden = twilio;

  setInterval(poll, POLL_MS);
  setInterval(tick, 1000);
  applyLang();
  // A session named in the address (or kept from before) may already exist.
  if (params.get('session') || localStorage.getItem('callpipe.session')) {
    const asked = model.session;
    api('GET', '/api/sessions/' + encodeURIComponent(asked)).then((s) => {
      if (model.session !== asked) return; // a new session was started meanwhile
      model.known = true;
      model.callSid = s.call_sid || null;
      model.phoneCall = !!s.call_sid;
      model.muted = !!s.muted;
      model.summary = s.summary || null;
      model.diagnostic = s.diagnostic || null;
      fillContext(s.context);
      for (const h of s.status_history || []) onStatus(h.status, h.at);
      goLive();
      poll();
    }).catch(() => { /* not started yet: the first message starts it */ });
  }
})();
