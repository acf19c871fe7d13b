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
  };

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
  };

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

  function setLanguages(languages) {
    state.languages = languages;
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
    startSession(mic, { room: choices.room, name: choices.name, lang });
  }

  function setJoining(joining) {
    ui.joinButton.disabled = joining;
    ui.joinButton.textContent = joining ? 'Joining…' : 'Join';
  }

  function startSession(mic, join) {
    const session = new BF.Session(state.server, join, mic);
    state.session = session;
    session.addEventListener('state', (event) => showStates(event.detail));
    session.addEventListener('joined', (event) => enterRoom(event.detail, mic));
    session.addEventListener('participants', (event) => renderPeople(event.detail));
    session.addEventListener('levels', (event) => showLevels(event.detail));
    session.addEventListener('track', (event) => playIncoming(event.detail));
    session.addEventListener('server-error', (event) => {
      showNotice({ text: BF.messages.serverError(event.detail.code, event.detail.message) });
      // The server refused the change, so the picker goes back to what it was.
      if (event.detail.code === 'unknown_lang') roomPicker.value = state.myLang;
    });
    session.addEventListener('ended', (event) => leaveRoom(event.detail));
    session.connect();
  }

  function enterRoom(joined, mic) {
    state.me = joined.id;
    ui.roomName.textContent = joined.room;
    renderPeople(joined.participants);
    state.micMeter = new BF.levels.LevelMeter(mic, (level) => {
      showMeter(ui.micMeter, level);
      showSpeaking(state.me, level);
    });
    ui.joinView.hidden = true;
    ui.roomView.hidden = false;
    setJoining(false);
    showUnlock();
  }

  function leaveRoom(reason) {
    const session = state.session;
    state.session = null;
    hideNotice();
    if (state.micMeter) state.micMeter.stop();
    if (state.incomingMeter) state.incomingMeter.stop();
    state.micMeter = null;
    state.incomingMeter = null;
    state.me = null;
    state.myLang = null;
    state.audioBlocked = false;
    state.people.clear();
    ui.participants.replaceChildren();
    ui.remoteAudio.srcObject = null;
    ui.unlockAudio.hidden = true;
    setMuted(false);
    showMeter(ui.micMeter, 0);
    showMeter(ui.incomingMeter, 0);
    ui.roomView.hidden = true;
    ui.joinView.hidden = false;
    setJoining(false);
    if (reason.serverError) showNotice({ text: BF.messages.serverError(reason.serverError.code, reason.serverError.message) });
    else if (reason.problem === 'unreachable' && session) showProblem(unreachableKind(session.server));
    else if (reason.problem) showProblem(reason.problem);
  }

  // ---- in the room

  const STATE_WORDS = {
    connecting: 'connecting', open: 'connected', closed: 'closed', new: 'waiting',
    connected: 'connected', disconnected: 'interrupted', failed: 'failed',
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
      text.append(name, lang);
      const level = document.createElement('span');
      level.className = 'speaking';
      level.title = 'Speaking';
      level.setAttribute('aria-hidden', 'true');
      level.append(document.createElement('i'), document.createElement('i'), document.createElement('i'));
      level.style.setProperty('--level', levels.get(person.id) || '0');
      item.append(avatar, text, level);
      ui.participants.append(item);
      state.people.set(person.id, { item, level });
    }
    const me = participants.find((person) => person.id === state.me);
    if (me && me.lang !== state.myLang) rememberLanguage(me.lang);
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

  // ---- start

  function init() {
    const choices = loadChoices();
    ui.serverUrl.value = defaultServer() || choices.server || '';
    ui.name.value = choices.name || '';
    ui.room.value = choices.room || '';
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
    ui.unlockAudio.addEventListener('click', unlockAudio);
    ui.muteButton.addEventListener('click', () => setMuted(ui.muteButton.getAttribute('aria-pressed') !== 'true'));
    window.addEventListener('pagehide', () => state.session && state.session.leave());

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
        mic: state.micMeter ? state.micMeter.snapshot() : null,
        incoming: state.incomingMeter ? state.incomingMeter.snapshot() : null,
        audio: state.micMeter ? state.micMeter.source.context.state : null,
      };
    },
  };

  init();
})(window.BF = window.BF || {});
