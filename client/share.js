// Inviting people: the room link as text and as a QR code, and reading such a link when
// the page is opened from one. A link is the page with `?room=NAME`; secrets (a room's
// passcode, `#passcode=`) go in the fragment, which browsers never send to a server.
(function (BF) {
  'use strict';

  // `base` is the server's page address; `secrets` maps fragment keys to values (empty
  // ones are left out).
  function inviteLink(base, room, secrets = {}) {
    const url = new URL(base);
    url.search = new URLSearchParams({ room }).toString();
    const fragment = new URLSearchParams();
    for (const [key, value] of Object.entries(secrets)) {
      if (value) fragment.set(key, value);
    }
    url.hash = fragment.toString();
    return url.href;
  }

  // What an invite link brings: {room, passcode, ...every fragment key}.
  function readInvite(location) {
    const invite = Object.fromEntries(new URLSearchParams(location.hash.replace(/^#/, '')));
    const room = new URLSearchParams(location.search).get('room');
    if (room) invite.room = room;
    return invite;
  }

  // The share dialog: link, copy, the system share sheet where there is one, and a QR
  // code drawn by the server (`POST /qr`; the link goes in the body, not the URL).
  class ShareDialog {
    constructor(dialog) {
      this.dialog = dialog;
      this.link = dialog.querySelector('.share-link');
      this.qr = dialog.querySelector('.share-qr');
      this.copy = dialog.querySelector('.share-copy');
      this.system = dialog.querySelector('.share-system');
      this.status = dialog.querySelector('.share-status');
      this.href = '';
      this.copy.addEventListener('click', () => this.copyLink());
      this.system.hidden = !navigator.share;
      this.system.addEventListener('click', () => {
        navigator.share({ title: 'Join me on BabbleFish', url: this.href }).catch(() => {});
      });
      dialog.querySelector('.share-close').addEventListener('click', () => dialog.close());
    }

    // `headers` authorise the QR request on a server with an operator token.
    async open(href, qrEndpoint, headers = {}) {
      this.href = href;
      this.link.value = href;
      this.status.textContent = '';
      this.qr.hidden = true;
      if (!this.dialog.open) this.dialog.showModal();
      this.link.select();
      try {
        const response = await fetch(qrEndpoint, { method: 'POST', body: href, headers, cache: 'no-store' });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const svg = await response.blob();
        if (this.href !== href) return;
        if (this.qr.src) URL.revokeObjectURL(this.qr.src);
        this.qr.src = URL.createObjectURL(svg);
        this.qr.hidden = false;
      } catch {
        this.status.textContent = 'The QR code could not be made; share the link instead.';
      }
    }

    async copyLink() {
      try {
        await navigator.clipboard.writeText(this.href);
        this.status.textContent = 'Link copied.';
      } catch {
        this.link.select();
        this.status.textContent = 'Select the link and copy it.';
      }
    }
  }

  BF.share = { inviteLink, readInvite, ShareDialog };
})(window.BF = window.BF || {});
