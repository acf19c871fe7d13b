// A searchable language list (WAI-ARIA combobox with a listbox popup).
//
// Type to filter by name or code; arrows move, Enter or a click picks, Escape closes.
// Leaving the field without picking puts the current choice back.
(function (BF) {
  'use strict';

  let nextId = 0;

  function fold(text) {
    return text.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
  }

  class LanguagePicker {
    // `input` is the text field, `list` an empty <ul>; `onPick(code)` runs when the user
    // picks a language different from the current one.
    constructor(input, list, onPick) {
      this.input = input;
      this.list = list;
      this.onPick = onPick;
      this.languages = [];
      this.shown = [];
      this.active = -1;
      this.code = null;
      this.prefix = `lang-option-${nextId++}`;

      input.setAttribute('role', 'combobox');
      input.setAttribute('aria-autocomplete', 'list');
      input.setAttribute('aria-expanded', 'false');
      input.setAttribute('aria-controls', list.id);
      input.autocomplete = 'off';
      input.spellcheck = false;
      list.setAttribute('role', 'listbox');
      list.hidden = true;

      input.addEventListener('input', () => this.open(input.value));
      input.addEventListener('focus', () => { input.select(); this.open(''); });
      input.addEventListener('click', () => { if (this.list.hidden) this.open(''); });
      input.addEventListener('keydown', (event) => this.onKey(event));
      input.addEventListener('blur', () => this.close());
      // Pick on mousedown so the input's blur does not close the list first.
      list.addEventListener('mousedown', (event) => {
        const item = event.target.closest('[data-code]');
        if (!item) return;
        event.preventDefault();
        this.pick(item.dataset.code);
      });
    }

    // `languages`: entries of GET /languages that a listener may pick.
    setLanguages(languages) {
      this.languages = languages;
      if (this.code && !this.find(this.code)) this.code = null;
      this.showChoice();
    }

    find(code) {
      return this.languages.find((lang) => lang.code === code) || null;
    }

    get value() {
      return this.code;
    }

    set value(code) {
      this.code = this.find(code) ? code : null;
      this.showChoice();
    }

    showChoice() {
      const lang = this.code && this.find(this.code);
      this.input.value = lang ? lang.name : '';
    }

    open(query) {
      const wanted = fold(query.trim());
      const words = wanted.split(/\s+/).filter(Boolean);
      // An exact code first, then names that start with the text, then the rest.
      const rank = (lang) => {
        if (fold(lang.code) === wanted) return 0;
        return fold(lang.name).startsWith(wanted) ? 1 : 2;
      };
      this.shown = this.languages
        .filter((lang) => {
          const haystack = fold(`${lang.name} ${lang.code}`);
          return words.every((word) => haystack.includes(word));
        })
        .map((lang, index) => ({ lang, index, rank: rank(lang) }))
        .sort((a, b) => a.rank - b.rank || a.index - b.index)
        .map((entry) => entry.lang);
      this.render();
      this.setActive(this.shown.findIndex((lang) => lang.code === this.code));
      this.list.hidden = false;
      this.input.setAttribute('aria-expanded', 'true');
    }

    close() {
      this.list.hidden = true;
      this.input.setAttribute('aria-expanded', 'false');
      this.input.removeAttribute('aria-activedescendant');
      this.showChoice();
    }

    render() {
      this.list.replaceChildren();
      if (!this.shown.length) {
        const empty = document.createElement('li');
        empty.className = 'picker-empty';
        empty.textContent = 'No language matches';
        this.list.append(empty);
        return;
      }
      this.shown.forEach((lang, index) => {
        const item = document.createElement('li');
        item.id = `${this.prefix}-${index}`;
        item.setAttribute('role', 'option');
        item.dataset.code = lang.code;
        item.setAttribute('aria-selected', String(lang.code === this.code));
        const name = document.createElement('span');
        name.className = 'picker-name';
        name.textContent = lang.name;
        const code = document.createElement('span');
        code.className = 'picker-code';
        code.textContent = lang.code;
        item.append(name);
        if (!lang.speech_out) {
          const badge = document.createElement('span');
          badge.className = 'badge';
          badge.textContent = 'captions only';
          item.append(badge);
        }
        item.append(code);
        this.list.append(item);
      });
    }

    setActive(index) {
      const items = this.list.querySelectorAll('[role="option"]');
      items.forEach((item, i) => item.classList.toggle('active', i === index));
      this.active = index;
      if (index >= 0 && items[index]) {
        this.input.setAttribute('aria-activedescendant', items[index].id);
        items[index].scrollIntoView({ block: 'nearest' });
      } else {
        this.input.removeAttribute('aria-activedescendant');
      }
    }

    onKey(event) {
      if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
        event.preventDefault();
        if (this.list.hidden) this.open('');
        const step = event.key === 'ArrowDown' ? 1 : -1;
        const count = this.shown.length;
        if (count) this.setActive((this.active + step + count) % count);
      } else if (event.key === 'Enter') {
        if (this.list.hidden) return;
        // Enter picks instead of submitting the form the field sits in.
        event.preventDefault();
        const index = this.active >= 0 ? this.active : 0;
        if (this.shown[index]) this.pick(this.shown[index].code);
      } else if (event.key === 'Escape') {
        if (!this.list.hidden) event.preventDefault();
        this.close();
      }
    }

    pick(code) {
      const changed = code !== this.code;
      this.code = code;
      this.close();
      if (changed) this.onPick(code);
    }
  }

  BF.LanguagePicker = LanguagePicker;
})(window.BF = window.BF || {});
