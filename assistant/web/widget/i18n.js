// The widget's words, by locale ("de-AT" falls back to "de", then to English), and the server's
// error codes said in words: a visitor never sees a code.

var STRINGS = {
  en: {
    title: "Assistant", welcome: "Hi! How can I help you today?",
    open: "Open chat", close: "Close chat", unread: "{n} unread",
    placeholder: "Type a message…", send: "Send", stop: "Stop the reply",
    attach: "Add an image", remove: "Remove image", micOn: "Start speaking", micOff: "Stop the mic",
    reset: "New conversation", typing: "The assistant is typing", listening: "Listening…",
    sending: "Waiting to send…", offline: "Offline: reconnecting…", stopped: "stopped",
    image: "image", you: "You", assistant: "Assistant",
    sources: "Sources", source: "Source {n}", page: "page {n}",
    talkToPerson: "Talk to a person", supportAgent: "Support agent",
    waitingHuman: "A person will reply here shortly",
    joined: "{n} joined the conversation",
    backToBot: "You are talking to the assistant again",
    resolved: "This conversation was marked resolved",
    errRate: "Too many messages right now. Please wait a moment and try again.",
    errRateIn: "Too many messages right now. Please try again in {n} s.",
    errImageLarge: "That image is too large to send.",
    errImageBad: "That image could not be read. Try a PNG, JPEG, WebP or GIF.",
    errFull: "This conversation is full. Start a new one to go on.",
    errAuth: "The chat is not available on this page.",
    errServer: "Something went wrong on our side. Please try again.",
    errAudio: "The recording could not be used. Please try again.",
    errMic: "The microphone is blocked or missing.",
    errNoVoice: "Voice is not available here.",
    errNetwork: "The chat server cannot be reached.",
    errGeneric: "Something went wrong. Please try again."
  },
  de: {
    title: "Assistent", welcome: "Hallo! Wie kann ich helfen?",
    open: "Chat öffnen", close: "Chat schließen", unread: "{n} ungelesen",
    placeholder: "Nachricht schreiben…", send: "Senden", stop: "Antwort anhalten",
    attach: "Bild hinzufügen", remove: "Bild entfernen", micOn: "Sprechen", micOff: "Mikrofon aus",
    reset: "Neues Gespräch", typing: "Der Assistent schreibt", listening: "Ich höre zu…",
    sending: "Wird gesendet, sobald online…", offline: "Offline: verbinde neu…", stopped: "angehalten",
    image: "Bild", you: "Sie", assistant: "Assistent",
    sources: "Quellen", source: "Quelle {n}", page: "Seite {n}",
    talkToPerson: "Mit einem Menschen sprechen", supportAgent: "Support-Team",
    waitingHuman: "Gleich antwortet Ihnen hier ein Mensch",
    joined: "{n} ist dem Gespräch beigetreten",
    backToBot: "Sie sprechen wieder mit dem Assistenten",
    resolved: "Dieses Gespräch wurde als gelöst markiert",
    errRate: "Gerade zu viele Nachrichten. Bitte kurz warten.",
    errRateIn: "Gerade zu viele Nachrichten. Bitte in {n} s erneut versuchen.",
    errImageLarge: "Das Bild ist zu groß.",
    errImageBad: "Das Bild ließ sich nicht lesen. PNG, JPEG, WebP oder GIF gehen.",
    errFull: "Dieses Gespräch ist voll. Bitte ein neues beginnen.",
    errAuth: "Der Chat ist auf dieser Seite nicht verfügbar.",
    errServer: "Bei uns ist etwas schiefgegangen. Bitte erneut versuchen.",
    errAudio: "Die Aufnahme ließ sich nicht verwenden.",
    errMic: "Das Mikrofon ist gesperrt oder fehlt.",
    errNoVoice: "Sprache ist hier nicht verfügbar.",
    errNetwork: "Der Chat-Server ist nicht erreichbar.",
    errGeneric: "Etwas ist schiefgegangen. Bitte erneut versuchen."
  },
  fr: {
    title: "Assistant", welcome: "Bonjour ! Comment puis-je vous aider ?",
    open: "Ouvrir le chat", close: "Fermer le chat", unread: "{n} non lus",
    placeholder: "Écrivez un message…", send: "Envoyer", stop: "Arrêter la réponse",
    attach: "Ajouter une image", remove: "Retirer l'image", micOn: "Parler", micOff: "Couper le micro",
    reset: "Nouvelle conversation", typing: "L'assistant écrit", listening: "J'écoute…",
    sending: "En attente d'envoi…", offline: "Hors ligne : reconnexion…", stopped: "arrêtée",
    image: "image", you: "Vous", assistant: "Assistant",
    sources: "Sources", source: "Source {n}", page: "page {n}",
    talkToPerson: "Parler à une personne", supportAgent: "Service client",
    waitingHuman: "Une personne va vous répondre ici sous peu",
    joined: "{n} a rejoint la conversation",
    backToBot: "Vous parlez de nouveau avec l'assistant",
    resolved: "Cette conversation a été marquée comme résolue",
    errRate: "Trop de messages pour l'instant. Patientez un moment.",
    errRateIn: "Trop de messages pour l'instant. Réessayez dans {n} s.",
    errImageLarge: "Cette image est trop grande.",
    errImageBad: "Cette image est illisible. Essayez PNG, JPEG, WebP ou GIF.",
    errFull: "Cette conversation est pleine. Commencez-en une nouvelle.",
    errAuth: "Le chat n'est pas disponible sur cette page.",
    errServer: "Un problème est survenu chez nous. Réessayez.",
    errAudio: "L'enregistrement n'a pas pu être utilisé.",
    errMic: "Le micro est bloqué ou absent.",
    errNoVoice: "La voix n'est pas disponible ici.",
    errNetwork: "Le serveur du chat est injoignable.",
    errGeneric: "Un problème est survenu. Réessayez."
  },
  es: {
    title: "Asistente", welcome: "¡Hola! ¿En qué puedo ayudarte?",
    open: "Abrir el chat", close: "Cerrar el chat", unread: "{n} sin leer",
    placeholder: "Escribe un mensaje…", send: "Enviar", stop: "Detener la respuesta",
    attach: "Añadir una imagen", remove: "Quitar la imagen", micOn: "Hablar", micOff: "Apagar el micrófono",
    reset: "Nueva conversación", typing: "El asistente está escribiendo", listening: "Escuchando…",
    sending: "Pendiente de envío…", offline: "Sin conexión: reconectando…", stopped: "detenida",
    image: "imagen", you: "Tú", assistant: "Asistente",
    sources: "Fuentes", source: "Fuente {n}", page: "página {n}",
    talkToPerson: "Hablar con una persona", supportAgent: "Agente de soporte",
    waitingHuman: "Una persona te responderá aquí en breve",
    joined: "{n} se unió a la conversación",
    backToBot: "Vuelves a hablar con el asistente",
    resolved: "Esta conversación se marcó como resuelta",
    errRate: "Demasiados mensajes ahora mismo. Espera un momento.",
    errRateIn: "Demasiados mensajes ahora mismo. Inténtalo en {n} s.",
    errImageLarge: "La imagen es demasiado grande.",
    errImageBad: "No se pudo leer la imagen. Prueba PNG, JPEG, WebP o GIF.",
    errFull: "Esta conversación está llena. Empieza una nueva.",
    errAuth: "El chat no está disponible en esta página.",
    errServer: "Algo salió mal por nuestra parte. Inténtalo de nuevo.",
    errAudio: "No se pudo usar la grabación.",
    errMic: "El micrófono está bloqueado o no existe.",
    errNoVoice: "La voz no está disponible aquí.",
    errNetwork: "No se puede contactar con el servidor del chat.",
    errGeneric: "Algo salió mal. Inténtalo de nuevo."
  }
};

// Server error code -> the key of its words.
var ERROR_WORDS = {
  rate_limited: "errRate", token_rate_limited: "errRate", too_many_connections: "errRate",
  too_many_generations: "errRate", session_busy: "errRate", response_in_progress: "errRate",
  image_too_large: "errImageLarge", image_too_many_pixels: "errImageLarge",
  event_too_large: "errImageLarge", request_too_large: "errImageLarge",
  invalid_image: "errImageBad", invalid_image_url: "errImageBad",
  unsupported_image_format: "errImageBad", image_expired: "errImageBad",
  session_too_large: "errFull", session_turn_limit: "errFull", context_length_exceeded: "errFull",
  missing_credentials: "errAuth", invalid_api_key: "errAuth", invalid_credentials: "errAuth",
  invalid_token: "errAuth", token_expired: "errAuth", origin_not_allowed: "errAuth",
  invalid_user_signature: "errAuth", insufficient_scope: "errAuth",
  invalid_audio: "errAudio", invalid_audio_bytes: "errAudio", audio_too_large: "errAudio",
  audio_too_long: "errAudio", input_audio_buffer_commit_empty: "errAudio",
  unsupported_frame: "errNoVoice", unsupported_content: "errNoVoice",
  model_error: "errServer", model_timeout: "errServer", store_unavailable: "errServer",
  internal_error: "errServer", configuration_error: "errServer", missing_dependency: "errServer",
  mic_blocked: "errMic", network: "errNetwork"
};

function localeTable(locale) {
  var tag = String(locale || "en").toLowerCase();
  return STRINGS[tag] || STRINGS[tag.split("-")[0]] || STRINGS.en;
}

function makeTranslator(locale) {
  var table = localeTable(locale);
  return function (key, n) {
    var text = table[key] || STRINGS.en[key] || key;
    return n === undefined ? text : text.replace("{n}", String(n));
  };
}

function errorWords(t, code, retryAfter) {
  var key = ERROR_WORDS[code] || "errGeneric";
  if (key === "errRate" && retryAfter) return t("errRateIn", Math.max(1, Math.ceil(retryAfter)));
  return t(key);
}
