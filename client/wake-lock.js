// Keeps the screen on while in a room, so a phone lying on the table keeps translating.
// Browsers drop the lock whenever the page is hidden; it is taken again on return.
(function (BF) {
  'use strict';

  class WakeLock {
    constructor() {
      this.wanted = false;
      this.sentinel = null;
      document.addEventListener('visibilitychange', () => {
        if (this.wanted && document.visibilityState === 'visible') this.acquire();
      });
    }

    get held() {
      return Boolean(this.sentinel);
    }

    hold() {
      this.wanted = true;
      return this.acquire();
    }

    release() {
      this.wanted = false;
      const sentinel = this.sentinel;
      this.sentinel = null;
      if (sentinel) sentinel.release().catch(() => {});
    }

    async acquire() {
      if (!navigator.wakeLock || this.sentinel || document.visibilityState !== 'visible') return;
      try {
        const sentinel = await navigator.wakeLock.request('screen');
        if (!this.wanted) {
          sentinel.release().catch(() => {});
          return;
        }
        this.sentinel = sentinel;
        sentinel.addEventListener('release', () => {
          if (this.sentinel === sentinel) this.sentinel = null;
        });
      } catch {
        // Refused (battery saver, or no permission): the screen may dim; nothing else changes.
      }
    }
  }

  BF.WakeLock = WakeLock;
})(window.BF = window.BF || {});
