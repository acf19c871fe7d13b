// What was said in the room, one entry per utterance, and its .txt and .srt forms.
//
// No DOM here: the page renders entries, the browser tests call these functions directly.
(function (BF) {
  'use strict';

  // Shown for an utterance whose server lost both texts (an error before ASR finished).
  const NOTHING_HEARD = '…';
  // An utterance without an end stamp still needs a positive SRT duration.
  const FALLBACK_DURATION_MS = 2000;

  // One caption per utterance id, in order of arrival. A `caption` message for a known id
  // updates that entry in place: partial -> final, or the dropped / error marker after it.
  //
  // Unbounded on purpose: the log is the transcript you download. Entries are text only
  // (a few hundred bytes), so even a day-long room stays in the low megabytes.
  class CaptionLog {
    constructor() {
      this.byId = new Map();
    }

    get entries() {
      return [...this.byId.values()];
    }

    get size() {
      return this.byId.size;
    }

    // Returns the entry the message created or updated.
    apply(msg) {
      const known = this.byId.get(msg.utterance);
      const entry = known || {
        utterance: msg.utterance, speaker: null, source_lang: '', source_text: '', lang: '',
        text: '', final: false, error: null, dropped: false, start: null, end: null,
      };
      entry.speaker = { ...entry.speaker, ...msg.speaker };
      if (msg.source_text) entry.source_text = msg.source_text;
      if (msg.source_lang) entry.source_lang = msg.source_lang;
      if (Number.isFinite(msg.start)) entry.start = msg.start;
      if (Number.isFinite(msg.end)) entry.end = msg.end;
      // A late partial must not replace the final translation; markers keep the text
      // already shown when they carry none.
      if (!(entry.final && !msg.final) && (msg.text || !entry.text)) {
        entry.text = msg.text || '';
        entry.lang = msg.lang || entry.lang;
      }
      entry.final = entry.final || Boolean(msg.final);
      if (msg.error) entry.error = String(msg.error);
      if (msg.dropped) entry.dropped = true;
      this.byId.set(entry.utterance, entry);
      return entry;
    }

    // A `speakers` update renames the speakers of earlier captions too. Returns the
    // entries that changed.
    applySpeakers(speakers) {
      const byId = new Map(speakers.map((speaker) => [speaker.id, speaker]));
      const changed = [];
      for (const entry of this.byId.values()) {
        const speaker = entry.speaker && byId.get(entry.speaker.id);
        if (speaker && (speaker.name !== entry.speaker.name || speaker.color !== entry.speaker.color)) {
          entry.speaker = { ...entry.speaker, name: speaker.name, color: speaker.color };
          changed.push(entry);
        }
      }
      return changed;
    }

    clear() {
      this.byId.clear();
    }
  }

  // The original is worth a second line only beside a text in another language (without
  // a text, the original is the main line itself).
  function originalOf(entry) {
    return entry.text && entry.source_text && entry.source_lang !== entry.lang ? entry.source_text : '';
  }

  function mainText(entry) {
    return entry.text || entry.source_text || NOTHING_HEARD;
  }

  function speakerName(entry) {
    return (entry.speaker && entry.speaker.name) || '?';
  }

  function pad(number, width) {
    return String(number).padStart(width, '0');
  }

  // 3723004 -> "01:02:03,004" (SRT) or "01:02:03" (clock, without milliseconds).
  function formatTime(ms, withMillis = true) {
    const total = Math.max(0, Math.round(ms));
    const hours = Math.floor(total / 3600000);
    const minutes = Math.floor(total / 60000) % 60;
    const seconds = Math.floor(total / 1000) % 60;
    const clock = `${pad(hours, 2)}:${pad(minutes, 2)}:${pad(seconds, 2)}`;
    return withMillis ? `${clock},${pad(total % 1000, 3)}` : clock;
  }

  // Entries with a start stamp, in spoken order, and the time they count from.
  function timed(entries) {
    const list = entries.filter((entry) => Number.isFinite(entry.start));
    list.sort((a, b) => a.start - b.start);
    return { list, origin: list.length ? list[0].start : 0 };
  }

  // SubRip: index, "start --> end", "Name: text", the original beneath, a blank line.
  // Times count from the first utterance's start.
  function toSrt(entries) {
    const { list, origin } = timed(entries);
    return list.map((entry, index) => {
      const start = entry.start - origin;
      const end = Number.isFinite(entry.end) && entry.end > entry.start
        ? entry.end - origin : start + FALLBACK_DURATION_MS;
      const lines = [String(index + 1), `${formatTime(start)} --> ${formatTime(end)}`,
        `${speakerName(entry)}: ${mainText(entry)}`];
      const original = originalOf(entry);
      if (original) lines.push(original);
      return `${lines.join('\n')}\n`;
    }).join('\n');
  }

  // Plain text for reading: a heading, then "[00:01:02] Name: text" and the original
  // indented beneath with its language. `languageName(code)` names languages.
  function toText(entries, { title = 'BabbleFish transcript', languageName = (code) => code } = {}) {
    const { list, origin } = timed(entries);
    const lines = [title];
    if (list.length) lines.push(`Started ${new Date(origin).toISOString()}`);
    lines.push('');
    for (const entry of list) {
      const markers = [entry.error ? '[translation failed]' : '', entry.dropped ? '[skipped to catch up]' : '']
        .filter(Boolean).join(' ');
      lines.push(`[${formatTime(entry.start - origin, false)}] ${speakerName(entry)}: ${mainText(entry)}${markers ? ` ${markers}` : ''}`);
      const original = originalOf(entry);
      if (original) lines.push(`    ${languageName(entry.source_lang)}: ${original}`);
    }
    return `${lines.join('\n')}\n`;
  }

  BF.transcript = { CaptionLog, toSrt, toText, formatTime, mainText, originalOf };
})(window.BF = window.BF || {});
