"""The prompt generator against a fake OpenAI-compatible server on 127.0.0.1, and the CLI.

Every network wait is bounded by the client's timeout (at most 5 s here), so no test can hang.
"""
import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clip_biomed.prompts import load_prompt_file, validate_prompt_file
from clip_biomed.prompts.generate import ChatClient, GenerationError, generate_ensemble, main, parse_sentences

REPO_ROOT = Path(__file__).resolve().parents[1]
ASK = re.compile(r'Write (\d+) different sentences describing how the class "(.+?)" looks')


class FakeChatServer:
    """A chat-completions endpoint whose answers come from ``respond(request) -> (status, body)``.

    ``request`` is a dict with the path, the Authorization header, the JSON body, and the class
    name, asked count and round number read from the user message.
    """

    def __init__(self, respond):
        self.requests = []
        self.rounds = {}
        self.release = threading.Event()  # lets a deliberately slow answer end at teardown
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                asked = ASK.search(body["messages"][-1]["content"] if body["messages"] else "")
                classname, count = (asked.group(2), int(asked.group(1))) if asked else (None, None)
                fake.rounds[classname] = fake.rounds.get(classname, 0) + 1
                request = {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body,
                           "classname": classname, "count": count, "round": fake.rounds[classname]}
                fake.requests.append(request)
                status, text = respond(request)
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def chat_reply(content):
    return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


def sentence(classname, number):
    return f"The {classname} shows finding {number} on the scan."


@pytest.fixture
def fake_chat(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy from the environment must not intercept
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers = []

    def start(respond):
        servers.append(FakeChatServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def always_fresh(request):
    """Exactly the asked count of new sentences, as a bare JSON array."""
    start = 1000 * request["round"]
    return chat_reply(json.dumps([sentence(request["classname"], start + i) for i in range(request["count"])]))


SHARED = "A sentence that the model offers for every class."


def messy_first_round(request):
    """Round 1: code fences, duplicates (also up to case and punctuation), empty entries, a
    sentence shared with another class, too few sentences. Round 2: numbered lines."""
    name = request["classname"]
    if request["round"] == 1:
        offered = [sentence(name, 0), sentence(name, 0), sentence(name, 0).upper().rstrip(".") + "!",
                   "", "   ", "12.", SHARED, sentence(name, 1), sentence(name, 2)]
        return chat_reply("```json\n" + json.dumps(offered, indent=1) + "\n```")
    numbered = [sentence(name, 1)] + [sentence(name, 10 + i) for i in range(request["count"])]
    return chat_reply("Here are the sentences:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(numbered, 1)))


def test_generate_deduplicates_and_asks_again_for_the_missing_count(fake_chat, tmp_path):
    server = fake_chat(messy_first_round)
    out = tmp_path / "toy.json"
    code = main(["generate", "--classes", "glioma tumor, normal brain", "--dataset", "TOY",
                 "--modality", "brain MRI", "--n", "6", "--out", str(out), "--base-url", server.base_url,
                 "--model", "test-model", "--api-key", "test-key", "--max-rounds", "3", "--timeout", "5"])
    assert code == 0
    for request in server.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["authorization"] == "Bearer test-key"
        assert request["body"]["model"] == "test-model"
        assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    # glioma keeps 4 of round 1 (the shared one too), normal brain 3 (the shared one is glioma's)
    assert [(r["classname"], r["count"]) for r in server.requests] == [
        ("glioma tumor", 6), ("glioma tumor", 2), ("normal brain", 6), ("normal brain", 3)]
    assert sentence("glioma tumor", 0) in server.requests[1]["body"]["messages"][-1]["content"]

    ensemble = load_prompt_file(out)
    assert (ensemble.dataset, ensemble.modality) == ("TOY", "brain MRI")
    assert list(ensemble.prompts) == ["glioma tumor", "normal brain"]
    assert ensemble.prompts["glioma tumor"] == [sentence("glioma tumor", 0), SHARED, sentence("glioma tumor", 1),
                                                sentence("glioma tumor", 2), sentence("glioma tumor", 10),
                                                sentence("glioma tumor", 11)]
    assert SHARED not in ensemble.prompts["normal brain"] and len(ensemble.prompts["normal brain"]) == 6
    assert validate_prompt_file(out, ["glioma tumor", "normal brain"], n_prompts=6) == []


def test_server_settings_come_from_the_environment(fake_chat, monkeypatch, tmp_path):
    server = fake_chat(always_fresh)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    out = tmp_path / "env.json"
    assert main(["generate", "--classes", "cyst", "--dataset", "TOY", "--modality", "CT", "--n", "2",
                 "--out", str(out)]) == 0
    (request,) = server.requests
    assert (request["authorization"], request["body"]["model"]) == ("Bearer env-key", "env-model")
    assert request["path"] == "/v1/chat/completions"
    assert load_prompt_file(out).prompts == {"cyst": [sentence("cyst", 1000), sentence("cyst", 1001)]}


def test_no_key_sends_no_authorization_header(fake_chat):
    server = fake_chat(lambda request: chat_reply("ok"))
    assert ChatClient(server.base_url, "m", api_key="", timeout=5).complete([], 0.0) == "ok"
    assert server.requests[0]["authorization"] is None


def test_classes_and_dataset_name_from_a_split_file(fake_chat, tmp_path):
    server = fake_chat(always_fresh)
    split = tmp_path / "split_TOY.json"
    split.write_text(json.dumps({"train": [["b/1.png", 1, "stone"], ["a/1.png", 0, "cyst"]],
                                 "val": [], "test": [["c/1.png", 2, "normal kidney"]]}), encoding="utf-8")
    out = tmp_path / "toy.json"
    assert main(["generate", "--split-file", str(split), "--modality", "CT", "--n", "1", "--out", str(out),
                 "--base-url", server.base_url, "--model", "m", "--timeout", "5"]) == 0
    ensemble = load_prompt_file(out)
    assert ensemble.dataset == "TOY" and list(ensemble.prompts) == ["cyst", "stone", "normal kidney"]


def test_dataset_config_takes_classes_and_modality_of_the_packaged_file(fake_chat, tmp_path):
    server = fake_chat(always_fresh)
    config = tmp_path / "btmri.yaml"
    config.write_text("DATASET:\n  NAME: \"BTMRI\"\n", encoding="utf-8")
    out = tmp_path / "btmri.json"
    assert main(["generate", "--dataset-config", str(config), "--n", "1", "--out", str(out),
                 "--base-url", server.base_url, "--model", "m", "--timeout", "5"]) == 0
    packaged, generated = load_prompt_file("BTMRI"), load_prompt_file(out)
    assert list(generated.prompts) == list(packaged.prompts)
    assert (generated.dataset, generated.modality) == ("BTMRI", packaged.modality)


def test_gives_up_naming_the_class_and_the_count_reached(fake_chat):
    server = fake_chat(lambda request: chat_reply(json.dumps([sentence("cyst", i) for i in range(3)])))
    client = ChatClient(server.base_url, "m", timeout=5)
    with pytest.raises(GenerationError) as caught:
        generate_ensemble(client, ["cyst"], "TOY", "CT", n=5, max_rounds=2, log=lambda message: None)
    assert "'cyst'" in str(caught.value) and "3/5" in str(caught.value) and "2 rounds" in str(caught.value)
    assert len(server.requests) == 2


def test_http_error_names_status_body_and_url(fake_chat, capsys, tmp_path):
    server = fake_chat(lambda request: (500, '{"error": "model overloaded"}'))
    code = main(["generate", "--classes", "cyst", "--dataset", "TOY", "--modality", "CT", "--out",
                 str(tmp_path / "x.json"), "--base-url", server.base_url, "--model", "m", "--timeout", "5"])
    error = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "x.json").exists()
    assert "HTTP 500" in error and "model overloaded" in error and f"{server.base_url}/chat/completions" in error


def test_unreachable_server_fails_fast_and_clearly():
    with socket.socket() as probe:  # a port that nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(GenerationError, match=f"Could not reach http://127.0.0.1:{port}/v1/chat/completions"):
        ChatClient(f"http://127.0.0.1:{port}/v1", "m", timeout=5).complete([], 0.0)
    assert time.monotonic() - started < 5


def test_slow_server_hits_the_timeout(fake_chat):
    def stall(request):
        server.release.wait(10)
        return chat_reply("too late")

    server = fake_chat(stall)
    started = time.monotonic()
    with pytest.raises(GenerationError, match="within 0.3 s"):
        ChatClient(server.base_url, "m", timeout=0.3).complete([], 0.0)
    assert time.monotonic() - started < 3


def test_answer_that_is_not_a_chat_completion(fake_chat):
    server = fake_chat(lambda request: (200, "<html>login page</html>"))
    with pytest.raises(GenerationError, match="did not answer with a chat completion: <html>login page"):
        ChatClient(server.base_url, "m", timeout=5).complete([], 0.0)


@pytest.mark.parametrize("reply, expected", [
    ('```json\n["One lesion.", "Two lesions."]\n```', ["One lesion.", "Two lesions."]),
    ('Sure! Here they are: ["One lesion.", "Two lesions."] Hope this helps.', ["One lesion.", "Two lesions."]),
    ('{"sentences": ["One lesion.", 3, "Two lesions."]}', ["One lesion.", "Two lesions."]),
    ('Here are 2 sentences:\n1. "One lesion.",\n2) Two   lesions.\n', ["One lesion.", "Two lesions."]),
    ("- One lesion.\n* Two lesions.\n\u2022 Three lesions.", ["One lesion.", "Two lesions.", "Three lesions."]),
])
def test_replies_are_parsed_leniently(reply, expected):
    assert parse_sentences(reply) == expected


def test_validate_command_exit_status_and_report(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"cyst": ["A round cyst.", "A thin-walled cyst."]}), encoding="utf-8")
    assert main(["validate", str(good), "--classes", "cyst", "--n", "2"]) == 0
    assert "OK" in capsys.readouterr().out

    assert main(["validate", str(good), "--dataset", "BTMRI", "--n", "2"]) == 1
    report = capsys.readouterr().out
    assert "class 'glioma tumor': missing" in report and "class 'normal brain': missing" in report


def test_module_entry_point_runs_validate():
    result = subprocess.run([sys.executable, "-m", "clip_biomed.prompts", "validate", "BTMRI", "--dataset", "BTMRI"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BTMRI: OK" in result.stdout
