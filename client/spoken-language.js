// "I speak: auto / Spanish / …": pins the language a participant speaks, or leaves it to
// the server to detect per utterance (favouring the language they listen in).
//
// The choice is kept across visits and sent as `set_spoken_lang` on each join and change.
(function (BF) {
  'use strict';

  const STORAGE_KEY = 'babblefish.speaks';
  const AUTO = 'auto';

  class SpokenLanguage {
    // `select` is an empty <select>; `send(code)` sends the choice to the server.
    constructor(select, send) {
      this.select = select;
      this.send = send;
      this.choice = localStorage.getItem(STORAGE_KEY) || AUTO;
      select.addEventListener('change', () => {
        this.choice = select.value;
        localStorage.setItem(STORAGE_KEY, this.choice);
        this.send(this.choice);
      });
    }

    // `languages`: the entries of GET /languages; only those the server hears are offered.
    setLanguages(languages) {
      const heard = languages.filter((lang) => lang.speech_in);
      const options = [new Option('Detect automatically', AUTO)];
      for (const lang of heard) options.push(new Option(lang.name, lang.code));
      this.select.replaceChildren(...options);
      if (!heard.some((lang) => lang.code === this.choice)) this.choice = AUTO;
      this.select.value = this.choice;
    }

    // After joining: the server starts at auto, so only a pinned language needs a message.
    joined() {
      if (this.choice !== AUTO) this.send(this.choice);
    }
  }

  BF.SpokenLanguage = SpokenLanguage;
})(window.BF = window.BF || {});
