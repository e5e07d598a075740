"""A LangGraph chat graph for the LangChain tests: ``StateGraph(MessagesState)`` with one node that
calls ``AssistantChatModel`` (sync and async), checkpointed by the saver given.

``python -m tests.support.langgraph_chat REDIS_URL THREAD TEXT`` runs one turn of it in a process
of its own (the scripted model, a ``RedisCheckpointSaver`` on ``REDIS_URL``) and prints the
thread's messages and what the model was shown, as JSON: a second process with the same thread
sees the first one's turn.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda
from langgraph.graph import START, MessagesState, StateGraph

from adapters.langchain import AssistantChatModel


def chat_graph(checkpointer: Any, lm: Any) -> tuple[Any, Any]:
    """The compiled graph and the language model its node calls."""
    model = AssistantChatModel(language_model=lm)

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def areply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", RunnableLambda(reply, afunc=areply))
    builder.add_edge(START, "chat")
    return builder.compile(checkpointer=checkpointer), lm


def main(redis_url: str, thread: str, text: str) -> None:
    from adapters.langchain import RedisCheckpointSaver
    from assistant.testing.language_models import ScriptedLM

    saver = RedisCheckpointSaver(redis_url)
    graph, lm = chat_graph(saver, ScriptedLM())
    result = graph.invoke({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}})
    shown = [m.text for m in lm.prompts[-1].messages]
    print(json.dumps({"messages": [[m.type, m.content] for m in result["messages"]], "shown": shown}))
    saver.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
