// Sound: one AudioContext (made on the visitor's first click: browsers start audio on a gesture
// only) for the mic and for spoken replies.
//   mic     getUserMedia -> the AudioWorklet (MIC_WORKLET: mono, resampled from the device's rate
//           to 16 kHz, PCM16) -> 100 ms chunks handed to the caller (sent as binary frames)
//   player  response.output_audio.delta (base64 PCM16 mono at the session's rate) scheduled back
//           to back on the context's clock, so the chunks play without gaps; flush() stops it all
//           at once (barge-in, stop)

function makeAudio() {
  var context = null;
  var workletLoaded = false;

  function audioContext() {
    if (!context) context = new (window.AudioContext || window.webkitAudioContext)();
    if (context.state === "suspended") context.resume();
    return context;
  }

  function makeMic(onChunk) {
    var stream = null;
    var source = null;
    var node = null;
    return {
      active: function () { return stream !== null; },
      start: async function () {
        var ctx = audioContext();
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          throw new WidgetError("mic_blocked");
        }
        try {
          stream = await navigator.mediaDevices.getUserMedia({
            audio: {channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true}
          });
        } catch (e) {
          stream = null;
          throw new WidgetError("mic_blocked", String(e));
        }
        if (!workletLoaded) {
          var url = URL.createObjectURL(new Blob([MIC_WORKLET], {type: "text/javascript"}));
          try { await ctx.audioWorklet.addModule(url); } finally { URL.revokeObjectURL(url); }
          workletLoaded = true;
        }
        source = ctx.createMediaStreamSource(stream);
        node = new AudioWorkletNode(ctx, "assistant-pcm16", {
          numberOfInputs: 1, numberOfOutputs: 0,
          processorOptions: {targetRate: 16000, chunkSamples: 1600}
        });
        node.port.onmessage = function (message) { onChunk(message.data); };
        source.connect(node);
      },
      stop: function () {
        if (source) source.disconnect();
        if (node) node.port.onmessage = null;
        if (stream) stream.getTracks().forEach(function (track) { track.stop(); });
        stream = source = node = null;
      }
    };
  }

  function makePlayer() {
    var next = 0; // where the audio queued so far ends, on the context's clock
    var streamEnd = 0; // where this reply's audio so far ends (0: no reply streaming)
    var playing = [];
    var stats = {chunks: 0, scheduledS: 0, playedS: 0, gaps: 0, interrupted: 0, cutS: 0};
    var odd = null; // a byte left over from a chunk of odd length

    function decode(base64) {
      var raw = atob(base64);
      var start = odd === null ? 0 : 1;
      var bytes = new Uint8Array(raw.length + start);
      if (odd !== null) bytes[0] = odd;
      for (var i = 0; i < raw.length; i++) bytes[i + start] = raw.charCodeAt(i);
      var even = bytes.length - (bytes.length % 2);
      odd = even < bytes.length ? bytes[even] : null;
      var view = new DataView(bytes.buffer, 0, even);
      var samples = new Float32Array(even / 2);
      for (var j = 0; j < samples.length; j++) samples[j] = view.getInt16(j * 2, true) / 32768;
      return samples;
    }

    return {
      unlock: function () { audioContext(); },
      enqueue: function (base64, rate) {
        var samples = decode(base64);
        if (samples.length === 0) return;
        var ctx = audioContext();
        var buffer = ctx.createBuffer(1, samples.length, rate || 16000);
        buffer.copyToChannel(samples, 0);
        var node = ctx.createBufferSource();
        node.buffer = buffer;
        node.connect(ctx.destination);
        var now = ctx.currentTime;
        if (streamEnd > 0 && streamEnd < now) stats.gaps += 1; // came too late to follow on
        var at = Math.max(next, now + 0.05);
        node.start(at);
        next = streamEnd = at + buffer.duration;
        stats.chunks += 1;
        stats.scheduledS += buffer.duration;
        playing.push(node);
        node.onended = function () {
          playing = playing.filter(function (n) { return n !== node; });
          stats.playedS += buffer.duration;
        };
      },
      flush: function () {
        if (playing.length > 0) { // cut short: what was still to play is dropped
          stats.interrupted += 1;
          stats.cutS += Math.max(0, next - context.currentTime);
        }
        playing.forEach(function (node) {
          node.onended = null;
          try { node.stop(); } catch (e) { /* not started yet */ }
        });
        playing = [];
        next = streamEnd = 0;
        odd = null;
      },
      end: function () { streamEnd = 0; odd = null; }, // this reply's audio is all here
      playing: function () { return playing.length > 0; },
      stats: function () {
        var copy = {playing: playing.length > 0};
        Object.keys(stats).forEach(function (name) { copy[name] = stats[name]; });
        return copy;
      }
    };
  }

  return {context: audioContext, makeMic: makeMic, makePlayer: makePlayer};
}
