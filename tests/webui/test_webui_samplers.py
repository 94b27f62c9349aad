"""The settings panel's DRY / XTC / top-n-sigma fields in headless Chromium, against the real server."""
from __future__ import annotations

import json

import pytest

from ui_helpers import set_setting, wait_done, wait_model_shown

LIST_PROMPT = "A list: apple, banana, apple, banana, apple, banana, apple,"
DEFAULTS = {"top_n_sigma": -1, "xtc_probability": 0, "xtc_threshold": 0.1, "dry_multiplier": 0, "dry_base": 1.75,
            "dry_allowed_length": 2, "dry_penalty_last_n": -1}


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "1024", "-np", "1")


@pytest.fixture
def ui(page, server):
    response = page.goto(server.url + "/")
    assert response.ok, response.status
    wait_model_shown(page)
    page.click("#mode-completion")
    set_setting(page, "temperature", 0)
    set_setting(page, "repeat_penalty", 1)
    set_setting(page, "n_predict", 12)
    page.fill("#completion-prompt", LIST_PROMPT)
    return page


def run_completion(page) -> tuple[dict, str]:
    """Sends the completion; returns the request body the page posted and the output it shows."""
    with page.expect_request("**/completion") as req:
        page.click("#send")
    wait_done(page)
    assert not page.is_visible("#error"), page.text_content("#error")
    return json.loads(req.value.post_data), page.text_content("#completion-output")


def test_defaults_are_sent_and_leave_the_output_alone(ui):
    for name, value in DEFAULTS.items():
        assert float(ui.input_value(f"#settings-{name}")) == value
    sent, output = run_completion(ui)
    assert {k: sent[k] for k in DEFAULTS} == DEFAULTS
    assert "dry_sequence_breakers" not in sent   # empty field: the server's default
    assert output.startswith(" banana, apple, banana"), output   # greedy repeats the list


def test_dry_settings_reach_the_server_and_stop_the_repetition(ui):
    set_setting(ui, "dry_multiplier", 1000)
    set_setting(ui, "dry_penalty_last_n", 512)
    set_setting(ui, "dry_sequence_breakers", '["\\u00a7\\u00a7"]')
    sent, output = run_completion(ui)
    assert sent["dry_multiplier"] == 1000 and sent["dry_penalty_last_n"] == 512
    assert sent["dry_sequence_breakers"] == ["\u00a7\u00a7"]
    assert output.strip() and "banana" not in output, output
    # kept across a reload, like every setting
    ui.reload()
    wait_model_shown(ui)
    assert ui.input_value("#settings-dry_multiplier") == "1000"
    assert ui.input_value("#settings-dry_sequence_breakers") == '["\\u00a7\\u00a7"]'


def test_xtc_and_top_n_sigma_settings_are_sent(ui):
    set_setting(ui, "xtc_probability", 1)
    set_setting(ui, "xtc_threshold", 0.05)
    set_setting(ui, "top_n_sigma", 2.5)
    sent, output = run_completion(ui)
    assert (sent["xtc_probability"], sent["xtc_threshold"], sent["top_n_sigma"]) == (1, 0.05, 2.5)
    assert not output.startswith(" banana, apple, banana"), output   # XTC moved off the top choices


def test_bad_breakers_are_refused_before_sending(ui, request_log):
    set_setting(ui, "dry_sequence_breakers", "not json")
    ui.click("#send")
    ui.wait_for_selector("#error", state="visible")
    assert "dry_sequence_breakers" in ui.text_content("#error")
    assert not any(u.endswith("/completion") for u in request_log.urls)


def test_server_rejection_is_shown(ui):
    set_setting(ui, "xtc_probability", 2)
    ui.click("#send")
    ui.wait_for_selector("#error", state="visible")
    wait_done(ui)
    assert "xtc_probability" in ui.text_content("#error")
