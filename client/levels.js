// Loudness of a MediaStream, measured with a WebAudio AnalyserNode.
//
// The same scale as the server's `levels` messages: 0 below -60 dBFS, 1 at full scale,
// linear in dB between, so one threshold means "speaking" for every indicator.
(function (BF) {
  'use strict';

  const FLOOR_DB = -60;
  const SAMPLE_MS = 50;
  // Readings kept for window.babblefish.stats(): 60 s at 20 per second.
  const HISTORY_LENGTH = 1200;
  const SPEAKING_LEVEL = 0.3;

  let sharedContext = null;

  // One AudioContext for the page. Created and resumed from a click, because browsers
  // start it suspended otherwise.
  function audioContext() {
    if (!sharedContext) {
      const Context = window.AudioContext || window.webkitAudioContext;
      sharedContext = new Context();
    }
    if (sharedContext.state === 'suspended') sharedContext.resume().catch(() => {});
    return sharedContext;
  }

  function peakToLevel(peak) {
    if (peak <= 0) return 0;
    const db = 20 * Math.log10(peak);
    return Math.min(1, Math.max(0, (db - FLOOR_DB) / -FLOOR_DB));
  }

  class LevelMeter {
    // `onLevel(level)` is called every SAMPLE_MS with the peak level of that interval.
    constructor(stream, onLevel) {
      const context = audioContext();
      this.source = context.createMediaStreamSource(stream);
      this.analyser = context.createAnalyser();
      this.analyser.fftSize = 2048;
      this.samples = new Float32Array(this.analyser.fftSize);
      this.source.connect(this.analyser);
      this.level = 0;
      this.history = [];
      this.onLevel = onLevel;
      this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    }

    sample() {
      this.analyser.getFloatTimeDomainData(this.samples);
      let peak = 0;
      for (const s of this.samples) peak = Math.max(peak, Math.abs(s));
      this.level = peakToLevel(peak);
      this.history.push([Date.now(), this.level]);
      if (this.history.length > HISTORY_LENGTH) this.history.splice(0, this.history.length - HISTORY_LENGTH);
      this.onLevel(this.level);
    }

    snapshot() {
      return { level: this.level, history: this.history.slice() };
    }

    stop() {
      clearInterval(this.timer);
      this.source.disconnect();
    }
  }

  BF.levels = { audioContext, LevelMeter, SPEAKING_LEVEL };
})(window.BF = window.BF || {});
