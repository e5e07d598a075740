"""``adapters.langchain`` is light to import and names its three public classes."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.filterwarnings(
    "error::langchain_core._api.deprecation.LangChainDeprecationWarning"
)


def test_importing_the_package_loads_no_langchain():
    code = ("import sys, adapters.langchain as lc; "
            "assert not [m for m in sys.modules if m.startswith(('langchain', 'langgraph'))], "
            "sorted(m for m in sys.modules if m.startswith('lang')); print(sorted(lc.__all__))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['AssistantChatModel',", "'LangChainLanguageModel',", "'RedisCheckpointSaver']"]


def test_the_public_names():
    import adapters.langchain as lc
    from adapters.langchain.chat_model import AssistantChatModel
    from adapters.langchain.checkpoint import RedisCheckpointSaver
    from adapters.langchain.language_model import LangChainLanguageModel

    assert (lc.AssistantChatModel, lc.RedisCheckpointSaver, lc.LangChainLanguageModel) == (
        AssistantChatModel, RedisCheckpointSaver, LangChainLanguageModel)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        lc.Nothing  # noqa: B018
