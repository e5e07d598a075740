"""The turn counters are plain integers read at scrape time: what was counted is what /metrics says."""

from assistant.server.metrics import Metrics


def test_counts_appear_in_the_exposition_with_their_labels():
    metrics = Metrics()
    for _ in range(3):
        metrics.event_in("conversation.item.create")
    metrics.event_in("response.create")
    metrics.error("invalid_json")
    metrics.response("completed", 7)
    metrics.response("cancelled", 2)
    lines = set(metrics.render().decode().splitlines())
    assert 'assistant_client_events_total{type="conversation.item.create"} 3.0' in lines
    assert 'assistant_client_events_total{type="response.create"} 1.0' in lines
    assert 'assistant_errors_total{code="invalid_json"} 1.0' in lines
    assert 'assistant_responses_total{status="completed"} 1.0' in lines
    assert 'assistant_responses_total{status="cancelled"} 1.0' in lines
    assert "assistant_output_tokens_total 9.0" in lines
    assert "# TYPE assistant_errors_total counter" in lines


def test_two_apps_in_one_process_count_apart():
    one, two = Metrics(), Metrics()
    one.error("x")
    assert 'assistant_errors_total{code="x"} 1.0' in one.render().decode()
    assert 'code="x"' not in two.render().decode()
