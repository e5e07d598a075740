"""The widget's browser tests: one scripted-model server for the package (``python -m assistant
serve``, its own redis-server, the real speech models linked in for the mic), one Chromium per
module, a new context (fresh storage) per test."""

from __future__ import annotations

import pytest

from tests.support.browser import WidgetPage, chromium
from tests.support.server import ServerProcess, link_prepared_models, serve_env

#: Every reply of the scripted model is "You said: <the message>", a word per token, each token
#: after this many seconds (so a reply streams over several frames and can be stopped).
TOKEN_DELAY_S = "0.04"
#: Messages a session may store: the test of errors in words fills one.
SESSION_TURNS = "8"


@pytest.fixture(scope="package")
def scripted_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("widget-scripted")
    link_prepared_models(data_dir)  # the speech models, for the mic
    env = serve_env(
        data_dir, ASSISTANT_LLM__ADAPTER="scripted", ASSISTANT_LLM__TOKEN_DELAY_S=TOKEN_DELAY_S,
        ASSISTANT_LIMITS__SESSION_TURNS=SESSION_TURNS, ASSISTANT_VOICE__PARTIAL_INTERVAL_S="0.5",
    )  # fmt: skip
    with ServerProcess(env) as server:
        yield server


@pytest.fixture(scope="module")
def browser_args():
    """More Chromium arguments for a module's browser (the mic's module feeds it a WAV)."""
    return ()


@pytest.fixture(scope="module")
def browser(browser_args):
    with chromium(*browser_args) as launched:
        yield launched


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def widget(context):
    return WidgetPage(context.new_page())
