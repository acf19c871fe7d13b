// Human wording for every problem the page can report. Kept apart from the logic so
// the texts can be reviewed (or translated) in one place.
(function (BF) {
  'use strict';

  // One entry per `code` in docs/protocol.md. A function receives the server's message,
  // for codes whose detail only the server knows (which field was wrong).
  const SERVER_ERRORS = {
    bad_json: 'The server could not read a message from this page. Reload the page and join again.',
    unknown_type: 'The server did not understand this page. The page and the server may be different versions: reload the page.',
    bad_field: (detail) => `The server did not accept what was sent: ${detail}`,
    not_joined: 'You are not in the room any more. Join again.',
    already_joined: 'You are already in this room.',
    unknown_lang: 'The server cannot provide that language. Pick another one from the list.',
    room_full: 'This room is full. Try again later, or pick another room.',
    bad_sdp: 'The server could not use your browser\'s audio setup. Try a recent Chrome, Firefox or Safari.',
    renegotiation_unsupported: 'The audio connection cannot be changed while connected. Leave and join again.',
    too_large: 'This page sent the server a message that was too large, and was disconnected. Join again.',
    rate_limited: 'This page sent too many requests too quickly and was disconnected. Wait a moment, then join again.',
    unknown_speaker: 'That voice is no longer in this room\'s list, so it cannot be renamed.',
    unknown_participant: 'That person has left the room, so they cannot be seated at your table.',
    unauthorized: 'This server is private. Type the access token that whoever runs it gave you, then join again.',
    wrong_passcode: 'This room is locked. Type its passcode (whoever opened the room knows it), then join again.',
    retry_later: (detail) => `Too many wrong tokens or passcodes from your network: ${detail}`,
    too_many_rooms: 'The server has as many rooms open as it allows. Join an open room, or try again later.',
    too_many_sockets: 'Too many connections from your network to this server. Close other BabbleFish tabs, then join again.',
    join_timeout: 'The connection waited too long without joining. Join again.',
    ice_failed: 'The audio connection failed; a firewall may be blocking it. Join again, or ask whoever runs the server to set up a TURN server.',
    resume_failed: 'You were disconnected for too long, so your place in the room was given up. Join again.',
  };

  function serverError(code, detail) {
    const text = SERVER_ERRORS[code];
    if (typeof text === 'function') return text(detail || code);
    if (text) return text;
    return `The server reported a problem (${code})${detail ? `: ${detail}` : '.'}`;
  }

  // Problems found by the page itself. `link` asks the notice to show the server's address.
  const PROBLEMS = {
    unreachable: {
      text: (server) => `Cannot reach the server at ${server}. Check the address, and that the server is running.`,
    },
    certificate: {
      text: (server) => `Cannot reach the server at ${server}. If it uses its own (self-signed) certificate, your browser does not trust it yet: open the server address once, accept the warning, then come back and try again.`,
      link: true,
    },
    mixed_content: {
      text: (server) => `This page was opened over https, so it cannot talk to ${server}. Use the https:// address of the server.`,
    },
    bad_server_url: {
      text: () => 'The server address is not valid. It looks like https://example.org:8443',
    },
    connection_lost: {
      text: () => 'The connection to the server was lost and could not be restored. Check your network, then join again.',
    },
    resumed_elsewhere: {
      text: () => 'You are in this room from another tab or window now, so this one stopped.',
    },
    server_shutdown: {
      text: () => 'The server is shutting down. Join again in a moment.',
    },
    cross_origin_refused: {
      text: (server) => `The server at ${server} is running but does not accept this page from another address. Open the server address itself in the browser.`,
      link: true,
    },
    languages_failed: {
      text: (server) => `The server at ${server} answered, but not with a language list. Is it a BabbleFish server?`,
    },
    mic_denied: {
      text: () => 'Microphone access was refused. Allow the microphone for this site (the icon in the address bar), then join again.',
    },
    mic_missing: {
      text: () => 'No microphone was found. Connect one, then join again.',
    },
    mic_busy: {
      text: () => 'The microphone could not be started; another app may be using it. Close that app, then join again.',
    },
    insecure_page: {
      text: () => 'Your browser only allows the microphone on secure pages. Open this page over https://, or from localhost.',
    },
    no_webrtc: {
      text: () => 'This browser cannot make audio calls (no WebRTC). Use a recent Chrome, Firefox or Safari.',
    },
    peer_failed: {
      text: () => 'The audio connection to the server failed; a firewall may be blocking it. Join again, or ask whoever runs the server to set up a TURN server.',
    },
    audio_blocked: {
      text: () => 'Your browser is waiting for a tap before it plays sound.',
    },
  };

  function problem(kind, server) {
    const entry = PROBLEMS[kind];
    return { text: entry.text(server), link: entry.link ? server : null };
  }

  BF.messages = { serverError, problem };
})(window.BF = window.BF || {});
