"""Human handoff: who answers a conversation (``status``: the state machine), why a conversation
is handed to a person (``triggers``), what the agent is told (``summary``), the service the
routes and the turn path call (``service.Handoff``), the gate that keeps the model silent while a
person holds a conversation (``gate``), and the per-process reader of the sessions' event streams
(``hub.EventHub``). The store is the ``ConversationStore`` port (``assistant.ports.conversations``)."""
