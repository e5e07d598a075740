// Voice: the mic button streams PCM16 16 kHz mono as binary frames (chunks made while the socket
// is not up yet wait, up to 3 s); the server's VAD ends the turn and answers it. The live partial
// transcript (input_audio_transcription.delta) grows in a bubble of its own; spoken replies
// (response.output_audio.delta) play gap-free when the session's modalities hold "audio"
// (spokenReplies: "mic" asks for them while the mic is on). Speech that starts over a reply stops
// its sound at once (barge-in; the server cancels the reply itself).

function makeVoice(settings, state, view, thread, connection, showError) {
  var audio = makeAudio();
  var player = audio.makePlayer();
  var backlog = [];
  var on = false;
  var available = true; // the server has speech: its session's turn_detection is set
  var modalities = ["text"];
  var rate = 16000;
  var partials = {}; // item id -> the live transcript's bubble
  var spoken = {}; // ids of the items spoken turns became
  var listening = null; // the item id between speech_started and speech_stopped

  var mic = audio.makeMic(function (buffer) {
    if (!on) return;
    if (state.connected && connection.sendBinary(buffer)) return;
    backlog.push(buffer);
    if (backlog.length > 30) backlog.shift();
  });

  function wanted() {
    var speak = settings.spokenReplies === true || (settings.spokenReplies === "mic" && on);
    return speak ? ["text", "audio"] : ["text"];
  }

  function sync() {
    if (!state.connected || !available) return;
    var next = wanted();
    if (next.join() === modalities.join()) return;
    modalities = next;
    connection.send({type: "session.update", session: {modalities: next}});
  }

  function drain() {
    while (backlog.length && connection.sendBinary(backlog[0])) backlog.shift();
  }

  function partial(id) {
    if (!partials[id]) partials[id] = thread.partial(id);
    return partials[id];
  }

  function stop() {
    if (!on) return;
    mic.stop();
    on = false;
    backlog = [];
    view.setMic(false);
    if (listening && state.connected) connection.send({type: "input_audio_buffer.commit"});
    sync();
  }

  return {
    unlock: function () {
      try { player.unlock(); } catch (e) { /* no audio on this device */ }
    },
    session: function (session) {
      rate = session.audio_sample_rate || 16000;
      modalities = session.modalities || ["text"];
      available = Boolean(session.turn_detection);
      if (!available) stop();
      view.setMicAvailable(settings.mic && available);
      sync();
      drain();
    },
    toggle: async function () {
      if (on) return stop();
      this.unlock();
      connection.connect();
      try {
        await mic.start();
      } catch (error) {
        showError(error.code || "mic_blocked");
        return;
      }
      on = true;
      view.setMic(true);
      view.showAlert("");
      sync();
    },
    stop: stop,
    silence: function () { player.flush(); },
    owns: function (item) { return Boolean(spoken[item.id]); },
    active: function () { return on; },
    stats: function () { return player.stats(); },
    event: function (event) {
      var type = event.type;
      if (type === "input_audio_buffer.speech_started") {
        player.flush(); // barge-in: the reply's sound stops now
        spoken[event.item_id] = true;
        listening = event.item_id;
        partial(event.item_id);
      } else if (type === "input_audio_buffer.speech_stopped") {
        listening = null;
      } else if (type === "input_audio_buffer.committed") {
        spoken[event.item_id] = true;
      } else if (type === "conversation.item.input_audio_transcription.delta") {
        partial(event.item_id).append(event.delta);
      } else if (type === "conversation.item.input_audio_transcription.completed") {
        partial(event.item_id).finish(event.transcript);
        delete partials[event.item_id];
      } else if (type === "conversation.item.input_audio_transcription.failed") {
        if (partials[event.item_id]) partials[event.item_id].drop();
        delete partials[event.item_id];
        showError((event.error || {}).code || "invalid_audio");
      } else if (type === "response.output_audio.delta") {
        if (modalities.indexOf("audio") >= 0) player.enqueue(event.delta, rate);
      } else if (type === "response.output_audio.done") {
        player.end();
      } else if (type === "session.updated") {
        modalities = event.session.modalities || modalities;
      }
    }
  };
}
