// Getting back into the room after the connection drops: when to retry, and what the
// page shows meanwhile (session.js does the reconnecting itself).
(function (BF) {
  'use strict';

  // The client tries for this long; the server keeps our place for --resume-grace (30 s
  // by default) from when it notices the drop, which is never earlier.
  const GIVE_UP_MS = 30000;
  const FIRST_MS = 500;
  const LONGEST_MS = 4000;

  // Waits before each attempt: 0.5, 1, 2, 4, 4, ... s, each +-20 % so that a room full of
  // phones on one Wi-Fi that dropped together does not come back in lockstep.
  class Backoff {
    constructor(now = Date.now) {
      this.now = now;
      this.deadline = now() + GIVE_UP_MS;
      this.delay = FIRST_MS;
      this.attempts = 0;
    }

    // Milliseconds to wait before the next attempt, or null once it is time to give up.
    next() {
      const left = this.deadline - this.now();
      if (left <= 0) return null;
      const wait = Math.min(this.delay * (0.8 + Math.random() * 0.4), left);
      this.delay = Math.min(this.delay * 2, LONGEST_MS);
      this.attempts += 1;
      return wait;
    }
  }

  // The "Reconnecting…" line in the room, shown while our own connection is down.
  function showReconnecting(element, on) {
    element.hidden = !on;
  }

  // Marks a person of the roster whose connection is down (`status` in docs/protocol.md).
  function markPerson(item, person) {
    const away = person.status === 'reconnecting';
    item.classList.toggle('is-reconnecting', away);
    if (!away) return;
    const label = document.createElement('span');
    label.className = 'person-status';
    label.textContent = 'reconnecting…';
    const text = item.querySelector('.person-text');
    (text || item).append(label);
  }

  BF.reconnect = { Backoff, showReconnecting, markPerson, GIVE_UP_MS };
})(window.BF = window.BF || {});
