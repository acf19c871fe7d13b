// The page: join form, room view, and the wiring between them and a Session.
(function (BF) {
  'use strict';

  const STORAGE_KEY = 'babblefish.join';
  const $ = (id) => document.getElementById(id);

  const ui = {
    notice: $('notice'), noticeText: $('notice-text'), noticeLink: $('notice-link'),
    joinView: $('join-view'), joinForm: $('join-form'), joinButton: $('join-button'),
    serverBox: $('server-box'), serverUrl: $('server-url'), serverSummary: $('server-summary'),
    serverCheck: $('server-check'), name: $('name'), room: $('room'),
    roomView: $('room-view'), roomName: $('room-name'), participants: $('participants'),
    peopleCount: $('people-count'), statusSocket: $('status-socket'), statusPeer: $('status-peer'),
    leaveButton: $('leave-button'), unlockAudio: $('unlock-audio'), muteButton: $('mute-button'),
    micMeter: $('mic-meter'), incomingMeter: $('incoming-meter'), remoteAudio: $('remote-audio'),
    captions: $('captions'), captionsEmpty: $('captions-empty'), transcript: $('transcript'),
    transcriptList: $('transcript-list'), transcriptCount: $('transcript-count'),
    downloadTxt: $('download-txt'), downloadSrt: $('download-srt'),
    mix: $('mix'), mixValue: $('mix-value'), latency: $('latency'),
    latencyTotal: $('latency-total'), latencyStages: $('latency-stages'),
    voicesCard: $('voices-card'), voices: $('voices'),
    lastTranscript: $('last-transcript'), lastRoom: $('last-room'),
    reconnecting: $('reconnecting'), shareButton: $('share-button'),
  };

  // The server's default balance: the original about 15 dB under a translation.
  const DEFAULT_MIX = 0.18;
  // Slider moves are sent at most this often (the server limits messages a second).
  const MIX_SEND_MS = 250;
  // Captions kept on screen; the transcript keeps every one.
  const LIVE_CAPTIONS = 40;
  // Pixels from the bottom within which the captions keep following new ones.
  const FOLLOW_SLACK_PX = 48;
  const LATENCY_STAGES = [
    ['vad_hangover_ms', 'Waiting for the end of speech'],
    ['voiceprint_ms', 'Recognising the voice (alongside)'],
    ['translate_ms', 'Recognition and translation'],
    ['tts_ms', 'Speech synthesis'],
    ['playout_ms', 'Queued before playing'],
  ];

  const state = {
    server: null,        // serverAddress() of the server the language list came from
    languages: [],       // every entry of GET /languages
    session: null,
    me: null,            // our participant id
    myLang: null,        // our language as the server last confirmed it
    audioBlocked: false, // the browser refused to play without a tap
    people: new Map(),   // id -> {item, level: element} of the rendered list
    micMeter: null,
    incomingMeter: null,
    room: null,          // the room of the captions in `captions`, kept after leaving
    captions: new BF.transcript.CaptionLog(),
    captionViews: new Map(), // utterance -> {live, row} elements (live: null once scrolled off)
    speakers: [],        // the last `speakers` list
    voiceViews: new Map(), // speaker id -> elements of its row in the Voices card
    renaming: null,      // id of the speaker whose name is being edited
    latency: null,       // the last `latency` message
    mix: DEFAULT_MIX,
    mixTimer: null,
  };

  const access = new BF.access.AccessFields(ui.joinForm, ui.joinButton, $('room-title'));
  const wakeLock = new BF.WakeLock();
  const shareDialog = new BF.share.ShareDialog($('share-dialog'));

  const joinPicker = new BF.LanguagePicker($('join-lang'), $('join-lang-list'), () => {});
  const roomPicker = new BF.LanguagePicker($('room-lang'), $('room-lang-list'), (code) => {
    if (state.session) state.session.setLang(code);
  });

  // ---- messages to the user

  function showNotice({ text, link }) {
    ui.noticeText.textContent = text;
    ui.noticeLink.hidden = !link;
    if (link) {
      ui.noticeLink.href = link;
      ui.noticeLink.textContent = `Open ${link}`;
    }
    ui.notice.hidden = false;
  }

  function hideNotice() {
    ui.notice.hidden = true;
  }

  function showProblem(kind) {
    showNotice(BF.messages.problem(kind, state.server ? state.server.base : ui.serverUrl.value));
  }

  // A failed request to an https server on another origin is most often an untrusted
  // certificate; the browser does not tell pages which it was.
  function unreachableKind(server) {
    const url = new URL(server.base);
    if (location.protocol === 'https:' && url.protocol === 'http:') return 'mixed_content';
    if (url.protocol === 'https:' && url.origin !== location.origin) return 'certificate';
    return 'unreachable';
  }

  // An opaque request gets through where only the CORS check failed: then the server is
  // up but does not serve pages from other origins (such as this file on disk).
  async function refusedOrUnreachable(server) {
    try {
      await fetch(server.languages, { mode: 'no-cors', cache: 'no-store' });
      return 'cross_origin_refused';
    } catch {
      return unreachableKind(server);
    }
  }

  // ---- remembered choices

  function loadChoices() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY)) || {};
    } catch {
      return {};
    }
  }

  function saveChoices(choices) {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(choices));
    } catch {
      // Storage can be off (private mode); remembering is a convenience only.
    }
  }

  // Our language changed (joined, or set_lang confirmed): the pickers and the next visit follow.
  function rememberLanguage(code) {
    state.myLang = code;
    roomPicker.value = code;
    joinPicker.value = code;
    saveChoices({ ...loadChoices(), lang: code });
  }

  // ---- server and languages

  function defaultServer() {
    return location.protocol === 'http:' || location.protocol === 'https:'
      ? new URL('.', location.href).href.replace(/\/$/, '')
      : '';
  }

  async function loadLanguages() {
    let server;
    try {
      server = BF.serverAddress(ui.serverUrl.value);
    } catch {
      state.server = null;
      setLanguages([]);
      ui.serverBox.open = true;
      showProblem('bad_server_url');
      return;
    }
    state.server = server;
    access.useServer(server.base);
    ui.serverSummary.textContent = new URL(server.base).host;
    $('join-lang').placeholder = 'Loading languages…';
    let body;
    try {
      const response = await fetch(server.languages, { cache: 'no-store' });
      body = response.ok ? await response.json() : null;
    } catch {
      setLanguages([]);
      ui.serverBox.open = true;
      showProblem(await refusedOrUnreachable(server));
      return;
    }
    if (!body || !Array.isArray(body.languages)) {
      setLanguages([]);
      showProblem('languages_failed');
      return;
    }
    hideNotice();
    setLanguages(body.languages);
  }

  const spoken = new BF.SpokenLanguage($('spoken-lang'), (lang) => {
    if (state.session && state.session.joined) state.session.send({ type: 'set_spoken_lang', lang });
  });

  function setLanguages(languages) {
    state.languages = languages;
    spoken.setLanguages(languages);
    const listenable = languages.filter((lang) => lang.text_out);
    joinPicker.setLanguages(listenable);
    roomPicker.setLanguages(listenable);
    const remembered = loadChoices().lang;
    if (!joinPicker.value) joinPicker.value = remembered || 'eng';
    $('join-lang').disabled = !listenable.length;
    $('join-lang').placeholder = listenable.length ? 'Search languages…' : 'No server';
    ui.joinButton.disabled = !listenable.length;
  }

  function languageName(code) {
    const lang = state.languages.find((entry) => entry.code === code);
    return lang ? lang.name : code;
  }

  // ---- joining and leaving

  async function join(event) {
    event.preventDefault();
    hideNotice();
    if (!ui.joinForm.reportValidity()) return;
    const lang = joinPicker.value;
    if (!lang) {
      $('join-lang').focus();
      return;
    }
    const choices = { server: ui.serverUrl.value.trim(), name: ui.name.value.trim(), room: ui.room.value.trim(), lang };
    saveChoices(choices);
    if (!window.RTCPeerConnection) return showProblem('no_webrtc');
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return showProblem('insecure_page');

    // Created inside the click so that browsers let it run.
    BF.levels.audioContext().onstatechange = showUnlock;
    setJoining(true);
    let mic;
    try {
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      setJoining(false);
      const kind = { NotAllowedError: 'mic_denied', SecurityError: 'mic_denied', NotFoundError: 'mic_missing', OverconstrainedError: 'mic_missing' }[error.name];
      return showProblem(kind || 'mic_busy');
    }
    startSession(mic, { room: choices.room, name: choices.name, lang, ...access.joinFields() });
  }

  function setJoining(joining) {
    ui.joinButton.disabled = joining;
    ui.joinButton.textContent = joining ? 'Joining…' : 'Join';
  }

  const table = new BF.TablePanel($('table-box'), (id, together) => {
    if (state.session) state.session.setTable(id, together);
  });

  function startSession(mic, join) {
    const session = new BF.Session(state.server, join, mic);
    state.session = session;
    session.addEventListener('state', (event) => showStates(event.detail));
    session.addEventListener('joined', (event) => {
      access.joined(session.server.base, event.detail);
      enterRoom(event.detail, mic);
    });
    session.addEventListener('interrupted', () => BF.reconnect.showReconnecting(ui.reconnecting, true));
    session.addEventListener('resumed', (event) => {
      BF.reconnect.showReconnecting(ui.reconnecting, false);
      renderPeople(event.detail.participants);
      // The server kept our balance; a slider moved while we were away had no socket.
      if (state.mix !== DEFAULT_MIX) session.setMix(state.mix);
    });
    session.addEventListener('participants', (event) => renderPeople(event.detail));
    session.addEventListener('levels', (event) => showLevels(event.detail));
    session.addEventListener('caption', (event) => showCaption(event.detail));
    session.addEventListener('latency', (event) => showLatency(event.detail));
    session.addEventListener('speakers', (event) => showSpeakers(event.detail));
    session.addEventListener('table', (event) => table.showTable(event.detail));
    session.addEventListener('track', (event) => playIncoming(event.detail));
    session.addEventListener('server-error', (event) => {
      showNotice({ text: BF.messages.serverError(event.detail.code, event.detail.message) });
      // The server refused the change, so the picker goes back to what it was.
      if (event.detail.code === 'unknown_lang') roomPicker.value = state.myLang;
      // A rename may have been refused: voice names go back to the server's.
      showSpeakers(state.speakers);
    });
    session.addEventListener('ended', (event) => leaveRoom(event.detail));
    session.connect();
  }

  function enterRoom(joined, mic) {
    state.me = joined.id;
    ui.roomName.textContent = joined.room;
    clearCaptions();
    state.room = joined.room;
    // The server starts everyone at the default; only another balance needs a message
    // (and a server without translation then has nothing to refuse).
    if (state.mix !== DEFAULT_MIX) state.session.setMix(state.mix);
    spoken.joined();
    renderPeople(joined.participants);
    state.micMeter = new BF.levels.LevelMeter(mic, (level) => {
      showMeter(ui.micMeter, level);
      showSpeaking(state.me, level);
    });
    ui.joinView.hidden = true;
    ui.roomView.hidden = false;
    setJoining(false);
    showUnlock();
    wakeLock.hold();
  }

  function leaveRoom(reason) {
    const session = state.session;
    state.session = null;
    hideNotice();
    wakeLock.release();
    BF.reconnect.showReconnecting(ui.reconnecting, false);
    if (state.micMeter) state.micMeter.stop();
    if (state.incomingMeter) state.incomingMeter.stop();
    state.micMeter = null;
    state.incomingMeter = null;
    state.me = null;
    state.myLang = null;
    state.audioBlocked = false;
    state.people.clear();
    ui.participants.replaceChildren();
    table.clear();
    // The captions stay in the log, for the download links under the form.
    showLastTranscript();
    ui.captions.replaceChildren(ui.captionsEmpty);
    ui.transcriptList.replaceChildren();
    state.captionViews.clear();
    showSpeakers([]);
    state.latency = null;
    ui.latency.hidden = true;
    clearTimeout(state.mixTimer);
    state.mixTimer = null;
    ui.remoteAudio.srcObject = null;
    ui.unlockAudio.hidden = true;
    setMuted(false);
    showMeter(ui.micMeter, 0);
    showMeter(ui.incomingMeter, 0);
    ui.roomView.hidden = true;
    ui.joinView.hidden = false;
    setJoining(false);
    if (reason.serverError) showNotice({ text: BF.messages.serverError(reason.serverError.code, reason.serverError.message) });
    if (reason.serverError && session) access.refused(session.server.base, reason.serverError.code);
    else if (reason.problem === 'unreachable' && session) showProblem(unreachableKind(session.server));
    else if (reason.problem) showProblem(reason.problem);
  }

  // ---- in the room

  const STATE_WORDS = {
    connecting: 'connecting', open: 'connected', closed: 'closed', new: 'waiting',
    connected: 'connected', disconnected: 'interrupted', failed: 'failed',
    reconnecting: 'reconnecting…',
  };

  function showStates({ socket, peer }) {
    for (const [element, value] of [[ui.statusSocket, socket], [ui.statusPeer, peer]]) {
      element.dataset.state = value;
      element.querySelector('span').textContent = STATE_WORDS[value] || value;
    }
  }

  function renderPeople(participants) {
    const levels = new Map([...state.people].map(([id, entry]) => [id, entry.level.style.getPropertyValue('--level')]));
    state.people.clear();
    ui.participants.replaceChildren();
    for (const person of participants) {
      const item = document.createElement('li');
      item.className = 'person';
      item.dataset.id = person.id;
      const avatar = document.createElement('span');
      avatar.className = 'avatar';
      avatar.style.setProperty('--hue', String(hue(person.id)));
      avatar.textContent = (person.name.trim()[0] || '?').toUpperCase();
      avatar.setAttribute('aria-hidden', 'true');
      const text = document.createElement('span');
      text.className = 'person-text';
      const name = document.createElement('span');
      name.className = 'person-name';
      name.textContent = person.name;
      if (person.id === state.me) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = 'you';
        name.append(' ', you);
      }
      const lang = document.createElement('span');
      lang.className = 'person-lang';
      lang.textContent = languageName(person.lang);
      // What they speak, when it is not what they hear: pinned, or detected on their speech.
      if (person.speaks && person.speaks !== person.lang) {
        const speaks = document.createElement('span');
        speaks.className = 'person-speaks';
        speaks.textContent = ` · speaks ${languageName(person.speaks)}`;
        speaks.title = person.speaks_from === 'pinned' ? 'Chosen by them' : 'Detected from their speech';
        lang.append(speaks);
      }
      text.append(name, lang);
      const level = document.createElement('span');
      level.className = 'speaking';
      level.title = 'Speaking';
      level.setAttribute('aria-hidden', 'true');
      level.append(document.createElement('i'), document.createElement('i'), document.createElement('i'));
      level.style.setProperty('--level', levels.get(person.id) || '0');
      item.append(avatar, text, level);
      BF.reconnect.markPerson(item, person);
      ui.participants.append(item);
      state.people.set(person.id, { item, level, status: person.status });
    }
    const me = participants.find((person) => person.id === state.me);
    if (me && me.lang !== state.myLang) rememberLanguage(me.lang);
    table.showPeople(participants, state.me);
    ui.peopleCount.textContent = `(${participants.length})`;
    $('alone').hidden = participants.length !== 1;
    $('alone-room').textContent = ui.roomName.textContent;
  }

  // Our own indicator follows the local microphone, which reacts sooner than the server.
  function showLevels(levels) {
    for (const [id, level] of Object.entries(levels)) {
      if (id !== state.me) showSpeaking(id, level);
    }
  }

  function showSpeaking(id, level) {
    const entry = state.people.get(id);
    if (!entry) return;
    entry.level.style.setProperty('--level', level.toFixed(2));
    entry.item.classList.toggle('is-speaking', level > BF.levels.SPEAKING_LEVEL);
  }

  function showMeter(bar, level) {
    bar.style.width = `${Math.round(level * 100)}%`;
    bar.parentElement.setAttribute('aria-valuenow', String(Math.round(level * 100)));
  }

  function hue(id) {
    let h = 0;
    for (const char of id) h = (h * 31 + char.charCodeAt(0)) % 360;
    return h;
  }

  function playIncoming(stream) {
    ui.remoteAudio.srcObject = stream;
    // Measured in parallel with playback; the element itself is what you hear.
    if (state.incomingMeter) state.incomingMeter.stop();
    state.incomingMeter = new BF.levels.LevelMeter(stream, (level) => showMeter(ui.incomingMeter, level));
    ui.remoteAudio.play().then(() => {
      state.audioBlocked = false;
      showUnlock();
    }, () => {
      state.audioBlocked = true;
      showUnlock();
    });
  }

  // Autoplay rules may hold back the audio element or the AudioContext (which runs the
  // meters) until a tap; the button stays until both run.
  function showUnlock() {
    const context = BF.levels.audioContext();
    ui.unlockAudio.hidden = !state.session || (!state.audioBlocked && context.state === 'running');
  }

  function unlockAudio() {
    BF.levels.audioContext();
    ui.remoteAudio.play().then(() => {
      state.audioBlocked = false;
      showUnlock();
    }, () => showProblem('audio_blocked'));
  }

  function setMuted(muted) {
    ui.muteButton.setAttribute('aria-pressed', String(muted));
    ui.muteButton.textContent = muted ? 'Unmute' : 'Mute';
    if (state.session) {
      for (const track of state.session.mic.getAudioTracks()) track.enabled = !muted;
    }
  }

  // ---- captions and transcript

  function clearCaptions() {
    state.captions.clear();
    state.captionViews.clear();
    ui.captions.replaceChildren(ui.captionsEmpty);
    ui.transcriptList.replaceChildren();
    showTranscriptCount();
    ui.lastTranscript.hidden = true;
  }

  function showCaption(msg) {
    const entry = state.captions.apply(msg);
    let view = state.captionViews.get(entry.utterance);
    const following = [ui.captions, ui.transcriptList].filter(atBottom);
    if (!view) {
      view = { live: document.createElement('article'), row: document.createElement('li') };
      state.captionViews.set(entry.utterance, view);
      ui.captionsEmpty.remove();
      ui.captions.append(view.live);
      ui.transcriptList.append(view.row);
      trimLiveCaptions();
      showTranscriptCount();
    }
    renderCaption(entry, view);
    for (const list of following) list.scrollTop = list.scrollHeight;
  }

  // A list scrolled to its end follows new captions; one scrolled back stays put.
  function atBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < FOLLOW_SLACK_PX;
  }

  function trimLiveCaptions() {
    while (ui.captions.childElementCount > LIVE_CAPTIONS) {
      const oldest = ui.captions.firstElementChild;
      oldest.remove();
      for (const view of state.captionViews.values()) {
        if (view.live === oldest) view.live = null;
      }
    }
  }

  function renderCaption(entry, view) {
    if (view.live) fillCaption(view.live, entry, false);
    fillCaption(view.row, entry, true);
  }

  // One caption: who, the text in our language, and the original beneath when it was
  // spoken in another. The transcript rows add the time.
  function fillCaption(element, entry, withTime) {
    element.className = 'caption';
    element.classList.toggle('is-partial', !entry.final);
    element.classList.toggle('has-error', Boolean(entry.error));
    element.dataset.utterance = entry.utterance;
    element.style.setProperty('--speaker', (entry.speaker && entry.speaker.color) || 'var(--muted)');

    const head = document.createElement('div');
    head.className = 'caption-head';
    const who = document.createElement('span');
    who.className = 'caption-speaker';
    who.textContent = (entry.speaker && entry.speaker.name) || '?';
    head.append(who);
    if (withTime && Number.isFinite(entry.start)) {
      const time = document.createElement('time');
      time.dateTime = new Date(entry.start).toISOString();
      time.textContent = new Date(entry.start).toLocaleTimeString();
      head.append(time);
    }
    for (const [on, kind, text] of [
      [!entry.final, 'partial', 'translating…'],
      [entry.dropped, 'dropped', '(skipped to catch up)'],
      [entry.error, 'error', 'translation failed'],
    ]) {
      if (!on) continue;
      const marker = document.createElement('span');
      marker.className = `caption-marker marker-${kind}`;
      marker.textContent = text;
      if (kind === 'error') marker.title = entry.error;
      head.append(marker);
    }

    const text = document.createElement('p');
    text.className = 'caption-text';
    text.textContent = BF.transcript.mainText(entry);
    element.replaceChildren(head, text);
    const original = BF.transcript.originalOf(entry);
    if (original) {
      const line = document.createElement('p');
      line.className = 'caption-original';
      line.textContent = original;
      line.title = `Original (${languageName(entry.source_lang)})`;
      element.append(line);
    }
  }

  function showTranscriptCount() {
    const count = state.captions.size;
    ui.transcriptCount.textContent = count ? `(${count})` : '';
    ui.downloadTxt.disabled = !count;
    ui.downloadSrt.disabled = !count;
  }

  function showLastTranscript() {
    ui.lastTranscript.hidden = !state.captions.size;
    ui.lastRoom.textContent = state.room || '';
  }

  function download(kind) {
    const entries = state.captions.entries;
    if (!entries.length) return;
    const text = kind === 'srt'
      ? BF.transcript.toSrt(entries)
      : BF.transcript.toText(entries, { title: `BabbleFish transcript, room ${state.room}`, languageName });
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([text], { type: kind === 'srt' ? 'application/x-subrip' : 'text/plain' }));
    link.download = `babblefish-${state.room}-${fileStamp(entries)}.${kind}`;
    document.body.append(link);
    link.click();
    link.remove();
    // The click has handed the blob to the download by the next task.
    setTimeout(() => URL.revokeObjectURL(link.href), 0);
  }

  // Local date and time of the first utterance, as "2025-05-01-14-30".
  function fileStamp(entries) {
    const starts = entries.map((entry) => entry.start).filter(Number.isFinite);
    const first = new Date(starts.length ? Math.min(...starts) : Date.now());
    return new Date(first.getTime() - first.getTimezoneOffset() * 60000).toISOString().slice(0, 16).replace(/[T:]/g, '-');
  }

  // ---- latency

  function seconds(ms) {
    return `${(ms / 1000).toFixed(2)} s`;
  }

  function showLatency(msg) {
    state.latency = msg;
    ui.latencyTotal.textContent = seconds(msg.total_ms);
    const stages = LATENCY_STAGES.filter(([key]) => Number.isFinite((msg.stages || {})[key]));
    const rows = [];
    for (const [key, label] of stages) {
      const term = document.createElement('dt');
      term.textContent = label;
      const value = document.createElement('dd');
      value.textContent = seconds(msg.stages[key]);
      rows.push(term, value);
    }
    ui.latencyStages.replaceChildren(...rows);
    ui.latency.title = stages.map(([key, label]) => `${label}: ${seconds(msg.stages[key])}`).join('\n');
    ui.latency.hidden = false;
  }

  // ---- original / translation balance

  function showMix(original) {
    ui.mix.value = String(Math.round(original * 100));
    ui.mixValue.textContent = `${Math.round(original * 100)}%`;
  }

  // While the slider moves: at most one message per MIX_SEND_MS, and always the last value.
  function onMixInput() {
    state.mix = Number(ui.mix.value) / 100;
    showMix(state.mix);
    saveChoices({ ...loadChoices(), mix: state.mix });
    if (!state.mixTimer) sendMix();
  }

  function sendMix() {
    const sent = state.mix;
    if (state.session && state.session.joined) state.session.setMix(sent);
    state.mixTimer = setTimeout(() => {
      state.mixTimer = null;
      if (state.mix !== sent) sendMix();
    }, MIX_SEND_MS);
  }

  // ---- voices (the server's speaker registry)

  function showSpeakers(speakers) {
    state.speakers = speakers;
    for (const entry of state.captions.applySpeakers(speakers)) {
      const view = state.captionViews.get(entry.utterance);
      if (view) renderCaption(entry, view);
    }
    const seen = new Set();
    speakers.forEach((speaker, index) => {
      seen.add(speaker.id);
      let view = state.voiceViews.get(speaker.id);
      if (!view) {
        view = voiceRow(speaker.id);
        state.voiceViews.set(speaker.id, view);
      }
      fillVoice(view, speaker);
      // Moved only when out of place, so a name being edited keeps its focus.
      if (ui.voices.children[index] !== view.item) ui.voices.insertBefore(view.item, ui.voices.children[index] || null);
    });
    for (const [id, view] of state.voiceViews) {
      if (seen.has(id)) continue;
      view.item.remove();
      state.voiceViews.delete(id);
      if (state.renaming === id) state.renaming = null;
    }
    ui.voicesCard.hidden = !speakers.length;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function voiceRow(id) {
    const dot = element('span', 'voice-dot');
    dot.setAttribute('aria-hidden', 'true');
    const name = element('span', 'voice-name');
    const you = element('span', 'you', 'you');
    const edit = element('button', 'icon-button rename-button');
    edit.type = 'button';
    edit.title = 'Rename';
    edit.innerHTML = '<svg viewBox="0 0 20 20" aria-hidden="true"><path d="M13.6 3.2l3.2 3.2-9.7 9.7-4 .8.8-4z"/></svg>';
    edit.addEventListener('click', () => startRename(id));
    const line = element('div', 'voice-line');
    line.append(name, you, edit);

    const input = element('input');
    input.type = 'text';
    input.maxLength = 64;
    input.setAttribute('aria-label', 'New name for this voice');
    const save = element('button', 'primary', 'Save');
    save.type = 'submit';
    const cancel = element('button', 'secondary', 'Cancel');
    cancel.type = 'button';
    const form = element('form', 'rename-form');
    form.noValidate = true;
    form.hidden = true;
    form.append(input, save, cancel);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      finishRename(id, input);
    });
    cancel.addEventListener('click', () => stopRename(id));
    input.addEventListener('input', () => input.setCustomValidity(''));
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') stopRename(id);
    });

    const bar = element('div', 'meter confidence');
    bar.setAttribute('role', 'meter');
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', '100');
    bar.append(element('div'));
    const detail = element('span', 'voice-detail');
    const progress = element('div', 'voice-progress');
    progress.append(bar, detail);

    const main = element('div', 'voice-main');
    main.append(line, form, progress);
    const item = element('li', 'voice');
    item.append(dot, main);
    return { item, line, name, you, edit, form, input, bar, detail };
  }

  function fillVoice(view, speaker) {
    view.item.style.setProperty('--speaker', speaker.color || 'var(--muted)');
    view.item.dataset.speaker = speaker.id;
    view.name.textContent = speaker.name;
    view.name.classList.remove('is-pending');
    view.you.hidden = !state.me || speaker.participant !== state.me;
    view.edit.setAttribute('aria-label', `Rename ${speaker.name}`);
    const confidence = Math.round(Math.min(1, Math.max(0, Number(speaker.confidence) || 0)) * 100);
    view.bar.firstElementChild.style.width = `${confidence}%`;
    view.bar.setAttribute('aria-valuenow', String(confidence));
    view.bar.setAttribute('aria-label', `How sure the server is of ${speaker.name}'s voice`);
    view.detail.textContent = `${(Number(speaker.seconds) || 0).toFixed(1)} s learned · ${confidence}% sure`;
    view.item.title = speaker.voice ? `Translations of this voice speak as ${speaker.voice}` : '';
    const renaming = state.renaming === speaker.id;
    view.form.hidden = !renaming;
    view.line.hidden = renaming;
  }

  function startRename(id) {
    if (state.renaming && state.renaming !== id) stopRename(state.renaming);
    const view = state.voiceViews.get(id);
    state.renaming = id;
    view.input.value = view.name.textContent;
    view.input.setCustomValidity('');
    view.form.hidden = false;
    view.line.hidden = true;
    view.input.focus();
    view.input.select();
  }

  function stopRename(id) {
    if (state.renaming === id) state.renaming = null;
    const view = state.voiceViews.get(id);
    if (!view) return;
    view.form.hidden = true;
    view.line.hidden = false;
    view.edit.focus();
  }

  // The server's rule for names: 1-64 printable characters (plain spaces and the zero-width
  // joiners of Persian or emoji allowed, no other separators or control and format characters).
  function finishRename(id, input) {
    const name = input.value.trim();
    const problem = !name ? 'Type a name.'
      : /[\p{C}\p{Z}]/u.test(name.replace(/[ \u200c\u200d]/g, '')) ? 'Use printable characters only.'
        : [...name].length > 64 ? 'Use at most 64 characters.' : '';
    input.setCustomValidity(problem);
    if (problem) {
      input.reportValidity();
      return;
    }
    const view = state.voiceViews.get(id);
    const unchanged = name === view.name.textContent;
    stopRename(id);
    if (unchanged || !state.session) return;
    state.session.renameSpeaker(id, name);
    // Shown at once, marked until the server's `speakers` message confirms it.
    view.name.textContent = name;
    view.name.classList.add('is-pending');
  }

  // ---- start

  function init() {
    const choices = loadChoices();
    ui.serverUrl.value = defaultServer() || choices.server || '';
    ui.name.value = choices.name || '';
    ui.room.value = choices.room || '';
    // Opened from an invite link: its room (access.js takes the fragment's secrets).
    const invite = BF.share.readInvite(location);
    if (invite.room) ui.room.value = invite.room;
    // Opened from disk there is no page origin to fall back on: ask for the server.
    if (!defaultServer()) ui.serverBox.open = true;

    ui.joinForm.addEventListener('submit', join);
    ui.serverCheck.addEventListener('click', loadLanguages);
    ui.serverUrl.addEventListener('change', loadLanguages);
    ui.serverUrl.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        loadLanguages();
      }
    });
    $('notice-close').addEventListener('click', hideNotice);
    ui.leaveButton.addEventListener('click', () => state.session && state.session.leave());
    // Secrets the join carried (access token, passcode) travel in the link's fragment.
    ui.shareButton.addEventListener('click', () => {
      if (!state.session) return;
      const { access_token: token, passcode } = state.session.join;
      const link = BF.share.inviteLink(state.server.base, state.room, { passcode, token });
      shareDialog.open(link, new URL('qr', state.server.base).href, access.authHeaders());
    });
    ui.unlockAudio.addEventListener('click', unlockAudio);
    ui.muteButton.addEventListener('click', () => setMuted(ui.muteButton.getAttribute('aria-pressed') !== 'true'));
    window.addEventListener('pagehide', () => state.session && state.session.leave());
    ui.downloadTxt.addEventListener('click', () => download('txt'));
    ui.downloadSrt.addEventListener('click', () => download('srt'));
    $('last-txt').addEventListener('click', () => download('txt'));
    $('last-srt').addEventListener('click', () => download('srt'));
    const mix = Number(choices.mix);
    state.mix = choices.mix !== undefined && mix >= 0 && mix <= 1 ? mix : DEFAULT_MIX;
    showMix(state.mix);
    ui.mix.addEventListener('input', onMixInput);
    // On a phone the transcript starts folded, so the live captions stay in view.
    if (window.matchMedia('(max-width: 680px)').matches) ui.transcript.open = false;

    if (ui.serverUrl.value) loadLanguages();
    else setLanguages([]);
  }

  // Read-only view of what the page measures, for diagnostics and the browser tests.
  window.babblefish = {
    stats() {
      const session = state.session;
      return {
        id: state.me,
        joined: Boolean(session && session.joined),
        states: session ? { ...session.states } : null,
        lang: state.myLang,
        participants: [...state.people.keys()],
        statuses: Object.fromEntries([...state.people].map(([id, entry]) => [id, entry.status])),
        reconnecting: Boolean(session && session.interrupted),
        wake_lock: wakeLock.held,
        mic: state.micMeter ? state.micMeter.snapshot() : null,
        incoming: state.incomingMeter ? state.incomingMeter.snapshot() : null,
        audio: state.micMeter ? state.micMeter.source.context.state : null,
        captions: state.captions.entries.map((entry) => ({
          utterance: entry.utterance,
          speaker: entry.speaker ? { ...entry.speaker } : null,
          lang: entry.lang,
          text: entry.text,
          source_text: entry.source_text,
          final: entry.final,
          error: entry.error,
          dropped: entry.dropped,
        })),
        latency_ms: state.latency ? state.latency.total_ms : null,
        speakers: state.speakers.map((speaker) => ({ ...speaker })),
        mix: state.mix,
      };
    },
  };

  init();
})(window.BF = window.BF || {});
