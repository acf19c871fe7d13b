// One stay in one room: the signaling WebSocket and the WebRTC peer connection.
//
// Speaks docs/protocol.md. Server messages go through MESSAGE_HANDLERS, one entry per
// `type`; new message types are one more entry there plus an event the page listens to.
//
// Events (CustomEvent, payload in `detail`):
//   state         {socket, peer}        connection states changed
//   joined        the `joined` message
//   interrupted   {}                    the connection dropped; reconnecting by itself
//   resumed       the `resumed` message (same id; the room and transcript go on)
//   participants  [{id, name, lang}]
//   levels        {id: level}
//   track         MediaStream           the audio mixed for us
//   caption       the `caption` message (one utterance, partial or final, in our language)
//   latency       the `latency` message (our language's audio for an utterance started)
//   speakers      [{id, name, color, participant, seconds, confidence, voice}]
//   table         the `table` message (who is at our table, and hand-made overrides)
//   server-error  {code, message}       a recoverable error; we are still in the room
//   ended         {problem} | {serverError} | {}   the session is over (empty: we left)
(function (BF) {
  'use strict';

  // The server does not trickle ICE, so the offer waits for our candidates, up to this.
  const GATHER_TIMEOUT_MS = 2000;
  // Codes after which the server closes the socket; we wait for the close to end.
  const FATAL_ERRORS = new Set(['too_large', 'rate_limited', 'ice_failed', 'too_many_sockets', 'join_timeout']);
  // Socket closes after which the server keeps our place: no close frame (the network
  // went), our media failed (4001), or a server error. Anything else is the end.
  const RESUMABLE_CLOSES = new Set([1006, 4001, 1011, 1012]);
  // A peer connection "disconnected" this long is taken for a dropped network (it
  // recovers by itself from shorter glitches).
  const PEER_DISCONNECTED_MS = 4000;

  const MESSAGE_HANDLERS = {
    joined(session, msg) {
      session.id = msg.id;
      session.joined = true;
      session.resumeToken = msg.resume_token || null;
      session.emit('joined', msg);
      session.startMedia(msg.ice_servers || []);
    },
    resumed(session, msg) {
      session.joined = true;
      session.interrupted = false;
      session.retry = null;
      session.resumeToken = msg.resume_token || null;
      session.setState('socket', 'open');
      session.emit('resumed', msg);
      session.startMedia(msg.ice_servers || []);
    },
    answer(session, msg) {
      if (!session.pc) return;
      session.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp })
        .catch(() => session.end({ problem: 'peer_failed' }));
    },
    participants(session, msg) {
      session.emit('participants', msg.participants);
    },
    levels(session, msg) {
      session.emit('levels', msg.levels);
    },
    caption(session, msg) {
      if (typeof msg.utterance === 'string') session.emit('caption', msg);
    },
    latency(session, msg) {
      if (Number.isFinite(msg.total_ms)) session.emit('latency', msg);
    },
    speakers(session, msg) {
      if (Array.isArray(msg.speakers)) session.emit('speakers', msg.speakers);
    },
    table(session, msg) {
      if (Array.isArray(msg.members)) session.emit('table', msg);
    },
    error(session, msg) {
      const error = { code: msg.code, message: msg.message };
      if (!session.joined) {
        session.end({ serverError: error });
      } else if (FATAL_ERRORS.has(msg.code)) {
        session.fatalError = error;
      } else {
        session.emit('server-error', error);
      }
    },
  };

  // "https://host:8443/prefix" -> {base: "https://host:8443/prefix/", ...}; throws if invalid.
  function serverAddress(text) {
    const url = new URL(text.trim());
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError('not http(s)');
    url.search = '';
    url.hash = '';
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    const socket = new URL('ws', url);
    socket.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return { base: url.href, socket: socket.href, languages: new URL('languages', url).href };
  }

  class Session extends EventTarget {
    // `mic` is the getUserMedia stream; the session stops its tracks when it ends.
    constructor(server, join, mic) {
      super();
      this.server = server;
      this.join = join;
      this.mic = mic;
      this.id = null;
      this.joined = false;
      this.ended = false;
      this.opened = false;
      this.fatalError = null;
      this.ws = null;
      this.pc = null;
      this.states = { socket: 'connecting', peer: 'new' };
      this.resumeToken = null; // from `joined`/`resumed`: our way back after a drop
      this.interrupted = false; // the connection dropped and we are getting it back
      this.retry = null;        // BF.reconnect.Backoff while interrupted
      this.retryTimer = null;
      this.peerTimer = null;
      this.onOnline = () => {
        // A new network (Wi-Fi -> 4G): the old ICE path is dead; do not wait to find out.
        if (this.joined && this.pc && this.pc.connectionState !== 'connected') this.interrupt();
      };
      window.addEventListener('online', this.onOnline);
    }

    emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    setState(part, value) {
      this.states[part] = value;
      this.emit('state', { ...this.states });
    }

    connect() {
      let ws;
      try {
        ws = new WebSocket(this.server.socket);
      } catch (error) {
        // Browsers refuse ws:// from an https page synchronously.
        this.end({ problem: error.name === 'SecurityError' ? 'mixed_content' : 'unreachable' });
        return;
      }
      this.ws = ws;
      // A socket we gave up on may still report; only the current one counts.
      ws.addEventListener('open', () => {
        if (ws !== this.ws) return;
        this.opened = true;
        if (this.interrupted) {
          // A new socket: the operator's token (when the server has one) goes along again.
          const access = this.join.access_token ? { access_token: this.join.access_token } : {};
          this.send({ type: 'resume', resume_token: this.resumeToken, ...access });
        } else {
          this.setState('socket', 'open');
          this.send({ type: 'join', ...this.join });
        }
      });
      ws.addEventListener('message', (event) => {
        if (ws === this.ws) this.onMessage(event.data);
      });
      ws.addEventListener('close', (event) => {
        if (ws === this.ws) this.onClose(event);
      });
    }

    send(message) {
      // A private server hears nothing on a socket until a message carries its token, and
      // a new socket may start with another message than `join`: every one carries it.
      const token = this.join.access_token;
      if (token) message = { ...message, access_token: token };
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    onMessage(data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      const handler = msg && MESSAGE_HANDLERS[msg.type];
      // Types this page does not know yet are skipped: newer servers may send more.
      if (handler && !this.ended) handler(this, msg);
    }

    onClose(event) {
      if (this.ended) return;
      if (this.resumeToken && (this.interrupted || RESUMABLE_CLOSES.has(event.code))) {
        this.interrupt();
        return;
      }
      this.setState('socket', 'closed');
      if (event.code === 4002) this.end({ problem: 'resumed_elsewhere' });
      else if (this.fatalError) this.end({ serverError: this.fatalError });
      else if (!this.opened) this.end({ problem: 'unreachable' });
      else if (event.code === 1001) this.end({ problem: 'server_shutdown' });
      else this.end({ problem: 'connection_lost' });
    }

    // The connection dropped (socket or media): let both go, keep the microphone, and
    // come back with `resume`, with backoff, until BF.reconnect gives up.
    interrupt() {
      if (this.ended) return;
      if (!this.interrupted) {
        this.interrupted = true;
        this.retry = new BF.reconnect.Backoff();
        this.emit('interrupted', {});
      }
      this.joined = false;
      this.fatalError = null;
      clearTimeout(this.retryTimer);
      this.dropPeer();
      const ws = this.ws;
      this.ws = null;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'reconnecting');
      this.setState('socket', 'reconnecting');
      const wait = this.retry.next();
      if (wait === null) {
        this.end({ problem: 'connection_lost' });
        return;
      }
      this.retryTimer = setTimeout(() => this.connect(), wait);
    }

    dropPeer() {
      clearTimeout(this.peerTimer);
      const pc = this.pc;
      this.pc = null;
      if (pc) pc.close();
      this.setState('peer', 'new');
    }

    async startMedia(iceServers) {
      const pc = new RTCPeerConnection({ iceServers });
      this.pc = pc;
      pc.addEventListener('connectionstatechange', () => {
        if (pc !== this.pc || this.ended) return;
        const state = pc.connectionState;
        this.setState('peer', state);
        clearTimeout(this.peerTimer);
        const resumable = Boolean(this.resumeToken);
        if (state === 'failed') {
          if (resumable) this.interrupt();
          else this.end({ problem: 'peer_failed' });
        } else if (state === 'disconnected' && resumable) {
          this.peerTimer = setTimeout(() => {
            if (pc === this.pc && pc.connectionState === 'disconnected') this.interrupt();
          }, PEER_DISCONNECTED_MS);
        }
      });
      pc.addEventListener('track', (event) => {
        if (pc !== this.pc) return;
        this.emit('track', event.streams[0] || new MediaStream([event.track]));
      });
      const [track] = this.mic.getAudioTracks();
      pc.addTransceiver(track, { direction: 'sendrecv', streams: [this.mic] });
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc);
      } catch {
        if (!this.ended && pc === this.pc) this.end({ problem: 'peer_failed' });
        return;
      }
      if (!this.ended && pc === this.pc) this.send({ type: 'offer', sdp: pc.localDescription.sdp });
    }

    // The server confirms with a `participants` message, or refuses with `unknown_lang`.
    setLang(lang) {
      this.send({ type: 'set_lang', lang });
    }

    // How loud the original voices play under translations: 0 (translation only) to 1.
    setMix(original) {
      this.send({ type: 'set_mix', original });
    }

    // The server answers with a `speakers` message, or `bad_field` / `unknown_speaker`.
    renameSpeaker(speaker, name) {
      this.send({ type: 'rename_speaker', speaker, name });
    }

    // Seat `participant` at our table (true), apart (false), or as the microphones say
    // (null). The server answers with a `table` message, or `unknown_participant`.
    setTable(participant, together) {
      this.send({ type: 'set_table', participant, together });
    }

    leave() {
      this.end({});
    }

    // Idempotent: closes everything this session opened, then tells the page why. The
    // server is told we left, so it keeps no place for us to resume.
    end(reason) {
      if (this.ended) return;
      this.ended = true;
      this.interrupted = false;
      clearTimeout(this.retryTimer);
      clearTimeout(this.peerTimer);
      window.removeEventListener('online', this.onOnline);
      if (this.joined) this.send({ type: 'leave' });
      if (this.pc) this.pc.close();
      for (const track of this.mic.getTracks()) track.stop();
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'left');
      this.setState('socket', 'closed');
      this.setState('peer', 'closed');
      this.emit('ended', reason);
    }
  }

  function gathered(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, GATHER_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') done();
      });
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  BF.Session = Session;
  BF.serverAddress = serverAddress;
})(window.BF = window.BF || {});
