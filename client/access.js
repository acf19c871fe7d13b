// Access to a server: the operator's token and a room's passcode (docs/protocol.md, Access).
//
// The token is asked for once, when the server answers `unauthorized`, or taken from an
// invite link's fragment (#token=…); it is remembered per server in localStorage. A
// passcode, typed or from the link (#passcode=…), locks a room you open and opens a room
// someone locked. Fragments never reach the server, so neither lands in its logs.
(function (BF) {
  'use strict';

  const STORAGE_KEY = 'babblefish-tokens';

  function storedTokens() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY)) || {};
    } catch {
      return {};
    }
  }

  function storeToken(server, token) {
    const tokens = storedTokens();
    if (token) tokens[server] = token;
    else delete tokens[server];
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(tokens));
    } catch {
      // Private browsing may refuse storage: the page then asks again next time.
    }
  }

  // The secrets of an invite link. The token leaves the address bar once read: it is
  // remembered, and a screenshot or a copied address should not carry it further.
  function takeFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const found = { token: params.get('token') || '', passcode: params.get('passcode') || '' };
    if (params.has('token')) {
      params.delete('token');
      const rest = params.toString();
      history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    }
    return found;
  }

  function field(id, label, hint) {
    const wrapper = document.createElement('div');
    wrapper.className = 'access-field';
    const title = document.createElement('label');
    title.htmlFor = id;
    title.textContent = label;
    const input = document.createElement('input');
    input.id = id;
    input.type = 'password';
    input.maxLength = id === 'passcode' ? 64 : 512;
    input.autocomplete = 'off';
    input.spellcheck = false;
    const note = document.createElement('p');
    note.className = 'field-hint';
    note.id = `${id}-hint`;
    note.textContent = hint;
    input.setAttribute('aria-describedby', note.id);
    wrapper.append(title, input, note);
    return { wrapper, input };
  }

  class AccessFields {
    // Adds the token and passcode fields to the join form, before `before`, and a "locked"
    // mark to `roomTitle` while in a room that has a passcode.
    constructor(form, before, roomTitle) {
      this.token = field('access-token', 'Access token',
        'This server is private: ask whoever runs it for the token. It is remembered on this device.');
      this.passcode = field('passcode', 'Room passcode (optional)',
        'Opening a new room with a passcode locks it; a locked room needs its passcode.');
      this.token.wrapper.hidden = true;
      this.lockMark = document.createElement('span');
      this.lockMark.className = 'muted lock-mark';
      this.lockMark.textContent = ' 🔒 locked';
      this.lockMark.title = 'Joining this room needs its passcode';
      this.lockMark.hidden = true;
      roomTitle.append(this.lockMark);
      form.insertBefore(this.token.wrapper, before);
      form.insertBefore(this.passcode.wrapper, before);
      this.linkToken = '';
      this.readLink();
      // An invite link pasted into a page that is already open changes only the fragment.
      window.addEventListener('hashchange', () => this.readLink());
    }

    readLink() {
      const link = takeFragment();
      if (link.passcode) this.passcode.input.value = link.passcode;
      if (!link.token) return;
      this.linkToken = link.token;
      this.token.input.value = link.token;
      this.token.wrapper.hidden = false;
    }

    // The server address is known (or changed): show its remembered token, if any.
    useServer(server) {
      const token = this.linkToken || storedTokens()[server] || '';
      this.token.input.value = token;
      this.token.wrapper.hidden = !token;
    }

    // Fields for the `join` message.
    joinFields() {
      const fields = {};
      const token = this.token.input.value.trim();
      const passcode = this.passcode.input.value;
      if (token) fields.access_token = token;
      if (passcode) fields.passcode = passcode;
      return fields;
    }

    joined(server, message) {
      const token = this.token.input.value.trim();
      if (token) storeToken(server, token);
      this.linkToken = '';
      this.lockMark.hidden = !message.locked;
    }

    // The server refused the join: show and focus the field that needs attention.
    refused(server, code) {
      if (code === 'unauthorized') {
        storeToken(server, '');
        this.token.wrapper.hidden = false;
        this.token.input.value = '';
        this.token.input.focus();
      } else if (code === 'wrong_passcode') {
        this.passcode.input.select();
        this.passcode.input.focus();
      }
    }

    // Headers for the server's REST routes (e.g. POST /qr), which a private server guards.
    authHeaders() {
      const token = this.token.input.value.trim();
      return token ? { Authorization: `Bearer ${token}` } : {};
    }

    // The fragment of an invite link to this room: the passcode and the token, if any.
    inviteFragment() {
      const params = new URLSearchParams();
      const { access_token: token, passcode } = this.joinFields();
      if (token) params.set('token', token);
      if (passcode) params.set('passcode', passcode);
      const text = params.toString();
      return text ? `#${text}` : '';
    }
  }

  BF.access = { AccessFields };
})(window.BF = window.BF || {});
