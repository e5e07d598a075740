// The mic's AudioWorklet processor (the widget loads it from a blob: URL, so it needs no request).
// The device's audio at its own rate (`sampleRate`, 44.1 or 48 kHz usually), any channel count ->
// mono -> 16 kHz: each output sample is the mean of the input samples within its span (a box
// filter against aliasing), then PCM16 little-endian, posted to the page in 100 ms chunks.
class AssistantPcm16 extends AudioWorkletProcessor {
  constructor(options) {
    super();
    var given = (options && options.processorOptions) || {};
    this.ratio = sampleRate / (given.targetRate || 16000); // input samples per output sample
    this.chunk = new Int16Array(given.chunkSamples || 1600);
    this.filled = 0;
    this.tail = new Float32Array(0); // input not consumed yet
    this.position = 0; // where the next output sample stands, in samples of `tail`
  }

  process(inputs) {
    var input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true;
    var mono = new Float32Array(this.tail.length + input[0].length);
    mono.set(this.tail);
    for (var c = 0; c < input.length; c++) {
      var channel = input[c];
      for (var i = 0; i < channel.length; i++) mono[this.tail.length + i] += channel[i] / input.length;
    }
    var half = this.ratio / 2;
    while (this.position + half + 1 < mono.length) {
      var low = Math.max(0, Math.ceil(this.position - half));
      var high = Math.min(mono.length - 1, Math.floor(this.position + half));
      var sum = 0;
      for (var k = low; k <= high; k++) sum += mono[k];
      this.push(high >= low ? sum / (high - low + 1) : mono[Math.round(this.position)]);
      this.position += this.ratio;
    }
    var keep = Math.max(0, Math.floor(this.position - half) - 1);
    this.tail = mono.slice(keep);
    this.position -= keep;
    return true;
  }

  push(value) {
    var v = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.filled === this.chunk.length) {
      var out = this.chunk.slice(0);
      this.port.postMessage(out.buffer, [out.buffer]);
      this.filled = 0;
    }
  }
}

registerProcessor("assistant-pcm16", AssistantPcm16);
