"""The command-line contract (../shared/cli.md), mostly in-process through longqa.cli.main."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from conftest import babi_text, torchrun
from safetensors import safe_open
from safetensors.torch import load_file

from longqa import __version__, cli
from longqa.lab.generate import babi
from longqa.questions import FORMS_HELP

torch.set_num_threads(1)

QS = ["Where is Mary?", "Where is John?", "Where is the milk?"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    milk = " Mary got the milk there. John went to the office. "
    (d / "a.txt").write_text(babi_text(40, seed=1) + milk + "\nSandra journeyed to the hallway.\n", encoding="utf-8")
    (d / "b.txt").write_text(babi_text(23, seed=2) + milk + " Daniel went back", encoding="utf-8")
    (d / "sub").mkdir()
    (d / "sub" / "c.txt").write_text(babi_text(7, seed=3) + milk, encoding="utf-8")
    return d


@pytest.fixture
def run(capsys: pytest.CaptureFixture, tiny_model: Path, monkeypatch: pytest.MonkeyPatch):
    """run(*args) -> (exit code, stdout lines, stderr text); --model tiny_model unless model=None."""
    monkeypatch.delenv("LONGQA_MODEL", raising=False)

    def _run(*args: str | Path, model: Path | None = tiny_model) -> tuple[int, list[str], str]:
        argv = [str(a) for a in args] + (["--model", str(model)] if model is not None and args and args[0] in ("ask", "memorize") else [])
        code = cli.main(argv)
        out, err = capsys.readouterr()
        return code, out.splitlines(), err

    return _run


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call must fail before any model is loaded (before reading)."""
    from longqa import engine

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded: the check came after it")

    monkeypatch.setattr(engine.Engine, "__init__", refuse)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def assert_same_state(p: Path, q: Path) -> None:
    a, b = tensors(p), tensors(q)
    assert a.keys() == b.keys() == {"A", "z", "pending"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = metadata(p), metadata(q)
    for k in ("tokens", "model_fingerprint", "format_version"):
        assert ma[k] == mb[k], k


def assert_error(result: tuple[int, list[str], str], code: int, *words: str) -> None:
    rc, out, err = result
    assert rc == code, err
    assert out == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longqa: error: "), err
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in err


# ---- equivalences ---------------------------------------------------------------------------------


def test_ask_equals_memorize_then_ask(run, corpus: Path, tmp_path: Path) -> None:
    a = corpus / "a.txt"
    rc, direct, _ = run("ask", a, *QS, "--save", tmp_path / "asked.state")
    assert rc == 0 and len(direct) == len(QS)
    rc, _, _ = run("memorize", a, "--save", tmp_path / "mem.state")
    assert rc == 0
    assert_same_state(tmp_path / "asked.state", tmp_path / "mem.state")
    rc, from_state, _ = run("ask", tmp_path / "mem.state", *QS)
    assert rc == 0 and from_state == direct
    st = tensors(tmp_path / "mem.state")
    assert st["A"].abs().sum() > 0 and len(st["pending"]) > 0  # a real memory, with an unfinished tail


def test_different_texts_give_different_states(run, corpus: Path, tmp_path: Path) -> None:
    run("memorize", corpus / "a.txt", "--save", tmp_path / "a")
    run("memorize", corpus / "b.txt", "--save", tmp_path / "b")
    assert not torch.equal(tensors(tmp_path / "a")["A"], tensors(tmp_path / "b")["A"])


def test_memorize_two_sources_equals_appending(run, corpus: Path, tmp_path: Path) -> None:
    a, b = corpus / "a.txt", corpus / "b.txt"
    assert run("memorize", a, b, "--save", tmp_path / "ab")[0] == 0
    assert run("memorize", a, "--save", tmp_path / "s1")[0] == 0
    assert run("memorize", b, "--memory", tmp_path / "s1", "--save", tmp_path / "s2")[0] == 0
    assert_same_state(tmp_path / "ab", tmp_path / "s2")
    assert json.loads(metadata(tmp_path / "s2")["sources"]) == [str(a), str(b)]
    assert int(metadata(tmp_path / "s2")["tokens"]) > int(metadata(tmp_path / "s1")["tokens"])
    # ask --memory S1 B answers as if it had read A then B.
    rc, appended, _ = run("ask", b, *QS, "--memory", tmp_path / "s1")
    rc2, whole, _ = run("ask", tmp_path / "ab", *QS)
    assert rc == rc2 == 0 and appended == whole


def test_directory_reads_its_files_in_sorted_order(run, corpus: Path, tmp_path: Path) -> None:
    assert run("memorize", corpus, "--save", tmp_path / "dir")[0] == 0
    assert run("memorize", corpus / "a.txt", corpus / "b.txt", corpus / "sub" / "c.txt", "--save", tmp_path / "files")[0] == 0
    assert_same_state(tmp_path / "dir", tmp_path / "files")


def test_several_questions_equal_one_per_call(run, corpus: Path) -> None:
    rc, together, _ = run("ask", corpus / "b.txt", *QS)
    assert rc == 0
    assert together == [run("ask", corpus / "b.txt", q)[1][0] for q in QS]


def test_questions_file_and_stdin(run, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = corpus / "a.txt"
    _, expected, _ = run("ask", a, *QS)
    qfile = tmp_path / "q.txt"
    qfile.write_text(f"\n{QS[1]}\n\n  {QS[2]}  \n", encoding="utf-8")
    rc, out, _ = run("ask", a, QS[0], "--questions", qfile)
    assert rc == 0 and out == expected
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(QS) + "\n\n"))
    rc, out, _ = run("ask", a, "--questions", "-")
    assert rc == 0 and out == expected


def test_questions_of_untrained_forms_get_one_warning_line(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus)
    rc, out, err = run("ask", "a.txt", *QS, "-q")
    assert rc == 0 and err == ""  # the bAbI forms: no warning
    rc, out, err = run("ask", "a.txt", "Who is Mary?", QS[0], "-q")
    assert rc == 0 and len(out) == 2 and out[0] == "?"  # no guess: the documented answer line
    assert err.splitlines() == [
        "longqa: warning: 'Who is Mary?' is not a question the model can answer (not a question form the model was "
        f"trained on), so its answer line is '?'; it answers: {FORMS_HELP}"]
    # A second SOURCE given by mistake is taken as a question; the warning says so.
    rc, out, err = run("ask", "a.txt", "b.txt", *[f"Where is Mary {i}?" for i in range(50)], QS[0], "-q")
    assert rc == 0 and len(out) == 52 and out[:51] == ["?"] * 51 and len(err.splitlines()) == 1
    assert err.startswith("longqa: warning: 51 questions are not ones the model can answer") and "'b.txt' names a file" in err


def test_stdout_holds_only_answers(run, corpus: Path) -> None:
    rc, out, err = run("ask", corpus / "a.txt", *QS)
    assert rc == 0 and len(out) == len(QS)
    assert "tokens" in err and err.startswith("longqa: ")
    assert not any("tokens" in line for line in out)
    rc, quiet_out, quiet_err = run("ask", corpus / "a.txt", *QS, "-q")
    assert rc == 0 and quiet_out == out and quiet_err == ""


def test_multiline_answer_stays_on_one_line(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from longqa.engine import Engine

    monkeypatch.setattr(Engine, "answer_pairs", lambda self, pairs: ["the\nkitchen\r\nnow"] * len(pairs))
    rc, out, _ = run("ask", corpus / "a.txt", *QS, "-q")
    assert rc == 0 and out == ["the kitchen now"] * len(QS)
    monkeypatch.setattr(Engine, "answer_pairs", lambda self, pairs: ["in\tthe garden"] * len(pairs))
    rc, out, _ = run("ask", corpus, QS[0], "-q", "--each")
    assert rc == 0 and [line.split("\t")[1] for line in out] == ["in the garden"] * 3
    monkeypatch.setattr(Engine, "answer_pairs", lambda self, pairs: ["the\nkitchen\r\nnow"] * len(pairs))
    rc, out, _ = run("ask", corpus / "a.txt", *QS, "-q", "--json")
    assert rc == 0 and [json.loads(line)["answer"] for line in out] == ["the\nkitchen\r\nnow"] * len(QS)


def test_json_lines(run, corpus: Path) -> None:
    a = corpus / "a.txt"
    _, plain, _ = run("ask", a, *QS)
    rc, out, _ = run("ask", a, *QS, "--json")
    assert rc == 0 and len(out) == len(QS)
    objs = [json.loads(line) for line in out]
    for q, ans, obj in zip(QS, plain, objs):
        assert {"question", "answer", "source", "tokens", "seconds"} <= obj.keys()
        assert obj["question"] == q and obj["answer"] == ans and obj["source"] == str(a)
        assert isinstance(obj["tokens"], int) and obj["tokens"] > 0
        assert isinstance(obj["seconds"], (int, float)) and obj["seconds"] >= 0


def test_ask_each_answers_every_file_like_asking_it_alone(run, corpus: Path) -> None:
    files = [corpus / "a.txt", corpus / "b.txt", corpus / "sub" / "c.txt"]
    rc, out, _ = run("ask", corpus, *QS[:2], "--each")
    assert rc == 0 and len(out) == len(files) * 2
    expected = [f"{f}\t{ans}" for f in files for ans in run("ask", f, *QS[:2])[1]]
    assert out == expected
    rc, out, _ = run("ask", corpus, *QS[:2], "--each", "--json")
    objs = [json.loads(line) for line in out]
    assert [(o["source"], o["question"]) for o in objs] == [(str(f), q) for f in files for q in QS[:2]]
    assert [f"{o['source']}\t{o['answer']}" for o in objs] == expected


@pytest.mark.slow
def test_ask_each_sharded_over_two_torchrun_ranks_prints_what_one_process_does(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Five files in one round: rank 0 reads files 0, 2 and 4, rank 1 files 1 and 3 (3 is empty). Rank 0
    prints every answer once, in file order, and the warning for rank 1's empty file once."""
    shutil.copytree(corpus, tmp_path / "c")
    (tmp_path / "c" / "z-empty.txt").write_text("")
    (tmp_path / "c" / "zz.txt").write_text((corpus / "a.txt").read_text())
    args = ["ask", tmp_path / "c", *QS[:2], "--each", "-m", tiny_model]
    one = longqa(*args)
    two = torchrun(*args)
    assert one.returncode == 0 and two.returncode == 0, two.stderr.decode()[-2000:]
    assert two.stdout == one.stdout and len(one.stdout.decode().splitlines()) == 5 * 2
    err = two.stderr.decode()
    assert err.count("no text") == 1 and err.count("read 5 documents") == 1


@pytest.mark.parametrize("command", ["ask", "memorize"])
def test_one_text_commands_refuse_torchrun(run, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = [corpus / "a.txt", QS[0]] if command == "ask" else [corpus / "a.txt", "--save", tmp_path / "s"]
    assert_error(run(command, *args), 2, command, "--each")
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_compile_on_cpu_says_it_does_not_apply_and_answers_the_same(run, corpus: Path) -> None:
    code, plain, _ = run("ask", corpus / "a.txt", *QS, "-q")
    code2, compiled, err = run("ask", corpus / "a.txt", *QS, "-q", "--compile")
    assert code == code2 == 0 and compiled == plain
    assert err.strip().splitlines() == ["longqa: warning: --compile only applies on a GPU; reading without it"]


def test_ask_each_needs_a_directory(run, corpus: Path) -> None:
    assert_error(run("ask", corpus / "a.txt", QS[0], "--each"), 2, "directory")


def test_reading_a_file_does_not_need_stdin(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, expected, _ = run("ask", corpus / "a.txt", *QS)
    monkeypatch.setattr(sys, "stdin", None)  # started with stdin closed (cron, daemons: `longqa ... <&-`)
    rc, out, err = run("ask", corpus / "a.txt", *QS)
    assert rc == 0 and out == expected, err


# ---- errors ---------------------------------------------------------------------------------------


def test_interrupt_exits_130(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from longqa.engine import Engine

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "read", interrupted)
    rc, out, err = run("ask", corpus / "a.txt", QS[0])
    assert rc == 130 and out == [] and err.strip() == "longqa: interrupted"


def test_save_into_a_missing_folder_is_refused_before_reading(run, corpus: Path, tmp_path: Path, no_engine) -> None:
    assert_error(run("memorize", corpus / "a.txt", "--save", tmp_path / "no" / "dir" / "s", "-q"), 2, "no such directory", "no/dir")
    assert_error(run("ask", corpus / "a.txt", QS[0], "--save", tmp_path), 2, "is a directory")
    assert os.listdir(tmp_path) == []


def test_state_file_as_memorize_source_is_refused(run, corpus: Path, tmp_path: Path) -> None:
    run("memorize", corpus / "a.txt", "--save", tmp_path / "s")
    assert_error(run("memorize", tmp_path / "s", corpus / "b.txt", "--save", tmp_path / "t"), 2, "--memory")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("option", ["--memory", "--save"])
def test_each_refuses_memory_and_save(run, corpus: Path, tmp_path: Path, option: str) -> None:
    run("memorize", corpus / "a.txt", "--save", tmp_path / "s")
    assert_error(run("ask", corpus, QS[0], "--each", option, tmp_path / "s"), 2, "--each", option)



def test_missing_file(run, tmp_path: Path) -> None:
    assert_error(run("ask", tmp_path / "nope.txt", QS[0]), 2, "no such file", "nope.txt")
    assert_error(run("memorize", tmp_path / "nope.txt", "--save", tmp_path / "s"), 2, "no such file")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content", [b"", b"  \n\t\n", b"\xef\xbb\xbf"])
def test_empty_input_file(run, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "empty.txt").write_bytes(content)
    assert_error(run("ask", tmp_path / "empty.txt", QS[0]), 2, "empty")
    assert_error(run("memorize", tmp_path / "empty.txt", "--save", tmp_path / "s"), 2, "empty")
    assert not (tmp_path / "s").exists()


def test_non_state_file_as_memory(run, corpus: Path) -> None:
    assert_error(run("ask", corpus / "a.txt", QS[0], "--memory", corpus / "b.txt"), 2, "not a longqa state")


def test_damaged_state_as_source(run, corpus: Path, tmp_path: Path) -> None:
    run("memorize", corpus / "a.txt", "--save", tmp_path / "s")
    data = bytearray((tmp_path / "s").read_bytes())
    data[-10] ^= 1
    (tmp_path / "s").write_bytes(bytes(data))
    assert_error(run("ask", tmp_path / "s", QS[0]), 2, "damaged")


def test_pickle_or_truncated_state_as_source_is_refused_not_read(run, corpus: Path, tmp_path: Path) -> None:
    import os
    import pickle

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (tmp_path / "mem.pt").write_bytes(pickle.dumps(Payload()))
    assert_error(run("ask", tmp_path / "mem.pt", QS[0]), 2, "pickle")
    assert not marker.exists()
    run("memorize", corpus / "a.txt", "--save", tmp_path / "s")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "s").read_bytes()[:40])  # header cut short
    assert_error(run("ask", tmp_path / "cut.pt", QS[0]), 2, "safetensors")


def test_state_of_another_model(run, corpus: Path, tmp_path: Path, other_model: Path) -> None:
    assert cli.main(["memorize", str(corpus / "a.txt"), "--save", str(tmp_path / "other"), "-m", str(other_model), "-q"]) == 0
    assert_error(run("ask", tmp_path / "other", QS[0]), 2, "another model")
    assert_error(run("ask", corpus / "b.txt", QS[0], "--memory", tmp_path / "other"), 2, "another model")
    assert_error(run("memorize", corpus / "b.txt", "--memory", tmp_path / "other", "--save", tmp_path / "x"), 2, "another model")


def test_no_questions(run, corpus: Path, tmp_path: Path) -> None:
    assert_error(run("ask", corpus / "a.txt"), 2, "no questions")
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    assert_error(run("ask", corpus / "a.txt", "--questions", tmp_path / "blank.txt"), 2, "no questions")
    assert_error(run("ask", corpus / "a.txt", "--questions", tmp_path / "missing.txt"), 2, "no such questions file")


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question(run, corpus: Path, question: str) -> None:
    assert_error(run("ask", corpus / "a.txt", QS[0], question), 2, "empty")


def test_stdin_cannot_be_both_source_and_questions(run) -> None:
    assert_error(run("ask", "-", "--questions", "-"), 2, "standard input")


def test_unknown_option(run, corpus: Path) -> None:
    assert_error(run("ask", corpus / "a.txt", QS[0], "--bogus"), 2, "--bogus")
    assert_error(run("memorize", corpus / "a.txt"), 2, "--save")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(run, corpus: Path) -> None:
    assert_error(run("ask", corpus / "a.txt", QS[0], "--device", "cuda"), 2, "cuda")
    assert_error(run("ask", corpus / "a.txt", QS[0], "--device", "tpu"), 2, "device")


def test_longqa_model_env_pointing_nowhere(run, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGQA_MODEL", str(tmp_path / "no-model"))
    assert_error(run("ask", corpus / "a.txt", QS[0], model=None), 2, "LONGQA_MODEL", "--model", "no-model")


def test_model_dir_without_files(run, corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    assert_error(run("ask", corpus / "a.txt", QS[0], model=tmp_path / "empty-model"), 2, "not a longqa model directory", "config.json")


def test_missing_default_model(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from longqa import checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL", "no-such-default-model")
    assert_error(run("ask", corpus / "a.txt", QS[0], model=None), 2, "--model", "LONGQA_MODEL")


def test_version_and_help(run) -> None:
    rc, out, _ = run("--version")
    assert rc == 0 and out == [f"longqa {__version__}"]
    rc, out, _ = run("--help")
    assert rc == 0 and any("ask" in line for line in out) and any("memorize" in line for line in out)
    rc, out, _ = run("ask", "--help")
    assert rc == 0 and any("--questions" in line for line in out)


# ---- a real process -------------------------------------------------------------------------------


def longqa(*args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("LONGQA_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "longqa", *map(str, args)], input=stdin, capture_output=True, env=full_env, timeout=120
    )


def test_process_missing_file_exit_code_and_one_line(tmp_path: Path) -> None:
    p = longqa("ask", tmp_path / "nope.txt", "Where is Mary?")
    assert p.returncode == 2
    assert p.stdout == b""
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longqa: error:") and "Traceback" not in p.stderr.decode()


REFUSED_EARLY = {
    "missing_file": (["ask", "nope.txt", "Where is Mary?"], {}),
    "empty_question": (["ask", "README.md", " "], {}),
    "missing_memorize": (["memorize", "nope.txt", "--save", "{tmp}/s"], {}),
    "stdin_twice": (["memorize", "-", "-", "--save", "{tmp}/s"], {}),
    "device_tpu": (["ask", "README.md", "Where is Mary?", "--device", "tpu"], {}),
    "each_on_a_file": (["ask", "README.md", "Where is Mary?", "--each"], {}),
    "save_missing_dir": (["ask", "README.md", "Where is Mary?", "--save", "/nonexistent/dir/m.pt"], {}),
    "save_is_dir": (["ask", "README.md", "Where is Mary?", "--save", "{tmp}"], {}),
    "save_name_too_long": (["ask", "README.md", "Where is Mary?", "--save", "{tmp}/" + "m" * 300], {}),
    "binary_source": (["ask", "{tmp}/bin", "Where is Mary?"], {}),
    "no_answerable_question": (["ask", "README.md", "What is the meaning of life?"], {}),
    "model_n_heads_0": (["ask", "README.md", "Where is Mary?", "-m", "{tmp}/model"], {}),
    "model_missing": (["ask", "README.md", "Where is Mary?", "-m", "{tmp}/nope"], {}),
    "world_size_abc": (["ask", "README.md", "Where is Mary?"], {"WORLD_SIZE": "abc"}),
    "hidden_only_dir": (["ask", "{tmp}/hidden", "Where is Mary?"], {}),
    "memory_not_a_state": (["ask", "README.md", "Where is Mary?", "--memory", "README.md"], {}),
}


@pytest.mark.parametrize("case", list(REFUSED_EARLY))
def test_bad_input_is_refused_before_torch_is_imported(case: str, tiny_model: Path, tmp_path: Path) -> None:
    """Checks that need no model come first: torch's import alone costs seconds (issue #32: under a second)."""
    shutil.copytree(tiny_model, tmp_path / "model")
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**cfg, "n_heads": 0}))
    (tmp_path / "bin").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 4)
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".notes.txt").write_text("Mary went to the kitchen.")
    args, env = REFUSED_EARLY[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = "import sys; from longqa.cli import main; code = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(code)"
    root = Path(__file__).resolve().parent.parent
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, cwd=root, timeout=60,
                       env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    assert p.returncode == 2, p.stderr.decode()
    assert p.stdout.decode().strip() == "False"
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longqa: error: "), lines
    assert seconds < 3, f"{seconds:.2f} s to refuse"  # ~0.3 s on the 2-core dev machine; generous for a loaded CI
    assert sorted(os.listdir(tmp_path)) == ["bin", "hidden", "model"]  # nothing written


def test_process_help_and_version() -> None:
    p = longqa("--help")
    assert p.returncode == 0 and b"ask" in p.stdout and p.stderr == b""
    p = longqa("--version")
    assert p.returncode == 0 and p.stdout.decode().strip() == f"longqa {__version__}"


def test_process_stdin_pipe_equals_file(run, corpus: Path, tiny_model: Path) -> None:
    a = corpus / "a.txt"
    _, expected, _ = run("ask", a, *QS)
    p = longqa("ask", "-", *QS, "--json", "-m", tiny_model, stdin=a.read_bytes())
    assert p.returncode == 0, p.stderr.decode()
    objs = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [o["answer"] for o in objs] == expected
    assert all(o["source"] == "-" for o in objs)


@pytest.mark.slow
def test_eval_sharded_over_two_torchrun_ranks_equals_one_process(tmp_path: Path) -> None:
    """`eval` under torchrun (gloo on CPU here, NCCL on GPUs): each rank reads a share of the documents,
    and the cells are exactly those of a single process, printed once. The shipped model answers some
    right, so a rank counted twice or a document missed would change the accuracy."""
    args = ["eval", "--tasks", "qa1,qa4", "--lengths", "600", "-n", "7", "--batch", "4"]
    single = longqa(*args, "--json", tmp_path / "one.json")
    assert single.returncode == 0, single.stderr.decode()
    two = torchrun(*args, "--json", tmp_path / "two.json")
    assert two.returncode == 0, two.stderr.decode()[-2000:]
    cells = [json.loads((tmp_path / f).read_text())["cells"] for f in ("one.json", "two.json")]
    strip = lambda cs: [{k: v for k, v in c.items() if k != "seconds"} for c in cs]  # noqa: E731
    assert strip(cells[0]) == strip(cells[1])  # every answer too, gathered from the ranks in document order
    assert all(0 < c["accuracy"] for c in cells[0])
    for c in cells[0]:  # each document's answer, scored: the cell's accuracy is theirs
        assert len(c["documents"]) == 7 and {d["expected"] for d in c["documents"]} <= set(babi.ROOMS)
        assert sum(d["correct"] for d in c["documents"]) == round(7 * c["accuracy"])
    assert two.stdout.decode().count("qa4") == 1  # rank 0 alone prints the table


def test_plots_without_matplotlib(run, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib is the optional `train` extra: eval --plot refuses before reading anything, and train
    still trains and checkpoints, warning that it drew no train.png."""
    from dataclasses import asdict

    from test_train import tiny_config

    from longqa.lab import cli as lab_cli
    from longqa.lab.train import Stage

    monkeypatch.setattr(lab_cli, "have_matplotlib", lambda: False)
    assert_error(run("eval", "-m", tiny_model, "--lengths", "300", "--plot", tmp_path / "p.png"), 2, "--plot", "longqa[train]")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(asdict(tiny_config(tmp_path / "run", [Stage(steps=2, max_segments=1, dense=1.0)]))))
    rc, out, err = run("train", config, "--max-minutes", "5")
    assert rc == 0 and (tmp_path / "run" / "trainer.json").is_file(), err
    assert not (tmp_path / "run" / "train.png").exists() and "no train.png" in err


@pytest.mark.parametrize(
    "text, words",
    [
        (None, ["No such file"]),
        ("{", ["Expecting property name"]),
        ('{"noise": [], "tokenizer": "t", "out": "o", "bogus": 1}', ["bogus"]),
        ('{"noise": [], "tokenizer": "t", "out": "o", "init": "weights/x", "model": {"d_model": 32}}', ["init", "'model'"]),
    ],
)
def test_bad_training_config(run, tmp_path: Path, text: str | None, words: list[str]) -> None:
    config = tmp_path / "cfg.json"
    if text is not None:
        config.write_text(text)
    assert_error(run("train", config), 2, "bad training config", *words)


def test_eval_prefix_reads_extra_noise_before_the_same_documents(tiny_model: Path, tmp_path: Path) -> None:
    """--prefix 2K: every document gets ~2K tokens of noise in front; the documents themselves (and so the
    model-free shortcut scores) stay the ones scored without it."""
    args = ["eval", "-m", tiny_model, "--tasks", "qa1,qa4", "--lengths", "300", "-n", "6", "--batch", "3"]
    cells = {}
    for pre in ("0", "2K"):
        p = longqa(*args, "--prefix", pre, "--json", tmp_path / f"{pre}.json")
        assert p.returncode == 0, p.stderr.decode()
        cells[pre] = json.loads((tmp_path / f"{pre}.json").read_text())
    assert cells["2K"]["prefix"] == 2000
    for plain, aged in zip(cells["0"]["cells"], cells["2K"]["cells"]):
        assert (plain["last_mentioned"], plain["random_mentioned"]) == (aged["last_mentioned"], aged["random_mentioned"])
        assert 2000 <= aged["mean_tokens"] - plain["mean_tokens"] < 2000 + 200  # a run ends on a sentence boundary


def test_a_huge_question_is_quoted_short(run, tmp_path: Path, no_engine) -> None:
    """A 1 MB question is not echoed whole: the one error line quotes a short prefix."""
    doc = tmp_path / "doc.txt"
    doc.write_text("Mary went to the kitchen.\n")
    (tmp_path / "q.txt").write_text("Where is " + "Mary and " * 120_000 + "John?\n")
    rc, out, err = run("ask", doc, "--questions", tmp_path / "q.txt")
    assert rc == 2 and out == []
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("longqa: error: no question the model can answer: 'Where is Mary and")
    assert len(lines[0]) < 1500 and "(1,080,014 characters)" in lines[0]


# ---- issue #32: questions as people type them, inputs as people give them ---------------------------


def test_questions_as_typed_get_the_trained_forms_answer(run, corpus: Path) -> None:
    a = corpus / "a.txt"
    _, expected, _ = run("ask", a, "Where is Mary?", "Where is the milk?", "-q")
    rc, out, err = run("ask", a, "where is mary?", "Where is mary", "  WHERE is Mary ? ", "where's the Milk", "-q")
    assert rc == 0 and err == "" and out == [expected[0]] * 3 + [expected[1]]


def test_an_unsupported_question_is_marked_in_json(run, corpus: Path) -> None:
    rc, out, err = run("ask", corpus / "a.txt", "What is the meaning of life?", "where is mary", "Where is Bob?", "--json", "-q")
    assert rc == 0 and len(err.splitlines()) == 1 and err.startswith("longqa: warning: 2 questions are not ones")
    objs = [json.loads(line) for line in out]
    assert [(o["question"], o["answer"], o["supported"]) for o in objs] == [
        ("What is the meaning of life?", "?", False), ("where is mary", objs[1]["answer"], True), ("Where is Bob?", "?", False)]
    assert "not a question form" in objs[0]["reason"] and "'Bob'" in objs[2]["reason"] and "reason" not in objs[1]


def test_no_answerable_question_is_exit_2_before_anything_is_read(run, corpus: Path, tmp_path: Path, no_engine) -> None:
    result = run("ask", corpus / "a.txt", "What is the meaning of life?", "Where is Bob?", "--save", tmp_path / "s")
    assert_error(result, 2, "no question the model can answer: 2 questions", "it answers: Where is Mary?")
    assert os.listdir(tmp_path) == []


def test_a_name_the_text_never_mentions_gets_no_confident_label(run, corpus: Path, tmp_path: Path) -> None:
    rc, out, err = run("ask", corpus / "a.txt", "Who gave the football to Fred?", QS[0], "--json", "-q")
    assert rc == 0 and err.splitlines() == [
        "longqa: warning: 'Who gave the football to Fred?': the text never mentions football or Fred, so its answer line is '?'"]
    assert [json.loads(line)["answer"] for line in out][0] == "?"
    assert json.loads(out[0])["supported"] is True and "never mentions" in json.loads(out[0])["reason"]
    # The same from a saved memory: what the text mentions is saved with it.
    assert run("memorize", corpus / "a.txt", "--save", tmp_path / "s", "-q")[0] == 0
    keep = lambda lines: [{k: o[k] for k in ("answer", "supported", "reason") if k in o} for o in map(json.loads, lines)]  # noqa: E731
    assert keep(run("ask", tmp_path / "s", "Who gave the football to Fred?", QS[0], "--json", "-q")[1]) == keep(out)


def test_stats_line_names_tokens_seconds_rate_and_device(run, corpus: Path) -> None:
    rc, _, err = run("ask", corpus / "a.txt", QS[0])
    assert rc == 0 and re.fullmatch(r"longqa: read: [\d,]+ tokens in [\d.]+ s \([\d,]+ tokens/s, cpu\)\n", err), err


def test_each_json_has_seconds(run, corpus: Path) -> None:
    rc, out, _ = run("ask", corpus, QS[0], "--each", "--json", "-q")
    assert rc == 0 and all(isinstance(json.loads(line)["seconds"], float) for line in out)


def test_short_options_and_readable_help(run) -> None:
    assert run("-V")[1] == [f"longqa {__version__}"]
    for args in (["-h"], ["ask", "-h"], ["memorize", "-h"], ["eval", "-h"]):
        rc, out, _ = run(*args)
        text = "\n".join(out)
        assert rc == 0 and "Usage: longqa" in text and "<" not in text and "list[" not in text and "{SOURCE}" not in text
    rc, out, _ = run("ask", "-h")
    text = " ".join(" ".join(out).split())
    assert "--questions FILE" in text and "--save STATE" in text and "-g, --glob GLOB" in text and "--hidden" in text
    assert "Answer line '?'" in text and "Exit 2 if no question can be answered" in text


def test_a_binary_source_is_refused_before_reading(run, tmp_path: Path, no_engine) -> None:
    (tmp_path / "ls-copy").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40)
    assert_error(run("ask", tmp_path / "ls-copy", QS[0]), 2, "is an ELF executable, not text; refused")
    assert_error(run("memorize", tmp_path / "ls-copy", "--save", tmp_path / "s"), 2, "ELF executable")
    assert not (tmp_path / "s").exists()


def test_directories_skip_hidden_files_unless_asked_and_filter_with_globs(run, tmp_path: Path) -> None:
    d = tmp_path / "repo"
    for rel, text in [("a.txt", "Mary went to the kitchen."), (".hidden.txt", "John went to the garden."),
                      (".git/COMMIT_EDITMSG", "Fix things."), ("notes.md", "Sandra went to the office.")]:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)

    def sources(*args: str | Path) -> list[str]:
        assert run("memorize", d, "--save", tmp_path / "s", "-q", *args)[0] == 0
        return [os.path.relpath(s, d) for s in json.loads(metadata(tmp_path / "s")["sources"])]

    assert sources() == ["a.txt", "notes.md"]
    assert sources("--hidden") == [".git/COMMIT_EDITMSG", ".hidden.txt", "a.txt", "notes.md"]
    assert sources("-g", "*.txt") == ["a.txt"]
    assert sources("--hidden", "--glob", "!.git") == [".hidden.txt", "a.txt", "notes.md"]


def test_replaced_bytes_get_one_warning_with_their_count(run, tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"Mary went to the \xffkitchen. \xe6\x97 John \xc3 went.")
    rc, out, err = run("ask", tmp_path / "bad.txt", QS[0], "-q")
    assert rc == 0 and err.splitlines() == ["longqa: warning: 4 bytes that are not valid UTF-8 replaced by U+FFFD (in "
                                            f"'{tmp_path / 'bad.txt'}')"]
    (tmp_path / "worse.txt").write_bytes(b"Mary went \xff\xff to the office.")
    rc, out, err = run("ask", tmp_path, QS[0], "--each", "-q")  # one warning for all the files
    assert rc == 0 and err.splitlines() == ["longqa: warning: 6 bytes that are not valid UTF-8 replaced by U+FFFD (in 2 files, "
                                            f"the first '{tmp_path / 'bad.txt'}')"]


def test_reporter_estimates_the_total_from_tokens_per_byte() -> None:
    rep = cli.Reporter(total_bytes=1000, quiet=True, device="cpu", ahead=lambda: 300)
    assert rep.estimate() is None  # nothing read yet
    rep.on_bytes(250)
    rep.on_tokens(100)
    assert rep.estimate() == 1200  # 300 tokens ahead per 250 bytes, for 1000 bytes
    rep.on_bytes(750)
    assert rep.estimate() == 300  # every byte read: the tokens ahead are the total
    assert cli.Reporter(None, True, "cpu").estimate() is None  # stdin: no size, no ETA


# ---- issue #33: state on stdin, output under failure, environment --------------------------------


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def test_a_state_on_stdin_is_recognised(run, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("memorize", corpus / "a.txt", "--save", tmp_path / "s", "-q")[0] == 0
    _, expected, _ = run("ask", tmp_path / "s", *QS, "-q")
    monkeypatch.setattr(sys, "stdin", FakeStdin((tmp_path / "s").read_bytes()))
    rc, out, err = run("ask", "-", *QS, "-q")
    assert rc == 0 and out == expected, err
    monkeypatch.setattr(sys, "stdin", FakeStdin((tmp_path / "s").read_bytes()))
    assert_error(run("memorize", "-", "--save", tmp_path / "t"), 2, "standard input holds a saved memory, not text")
    monkeypatch.setattr(sys, "stdin", FakeStdin((tmp_path / "s").read_bytes()[:-100]))
    assert_error(run("ask", "-", QS[0]), 2, "standard input is damaged")


def test_binary_on_stdin_is_refused_at_once(run, monkeypatch: pytest.MonkeyPatch, no_engine) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"\x80\x04\x95" + bytes(300)))
    assert_error(run("ask", "-", QS[0]), 2, "standard input is a Python pickle, not text")


class BrokenStdout(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")


def test_answers_that_cannot_be_written_are_an_error(corpus: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdout", BrokenStdout())
    code = cli.main(["ask", str(corpus / "a.txt"), QS[0], "-q", "-m", str(tiny_model)])
    err = capsys.readouterr().err
    assert code == 1 and err == "longqa: error: cannot write the answers to standard output: No space left on device\n"
    monkeypatch.setattr(sys, "stdout", None)  # started with stdout closed (`>&-`)
    code = cli.main(["ask", str(corpus / "a.txt"), QS[0], "-q", "-m", str(tiny_model)])
    assert code == 1 and "standard output is closed" in capsys.readouterr().err


def test_names_that_are_not_utf8_keep_output_valid(run, tmp_path: Path) -> None:
    d = tmp_path / "names"
    d.mkdir()
    for raw in (b"bad\xff.txt", b"tab\there.txt", b"ok.txt"):
        with open(os.path.join(os.fsencode(d), raw), "w") as f:
            f.write("Mary went to the kitchen.")
    rc, out, _ = run("ask", d, QS[0], "--each", "--json", "-q")
    assert rc == 0
    sources = [json.loads(line.encode("utf-8").decode("utf-8"))["source"] for line in out]
    assert [os.path.basename(s) for s in sources] == ["bad\\xff.txt", "ok.txt", "tab\\there.txt"]
    rc, out, _ = run("ask", d, QS[0], "--each", "-q")
    assert [line.count("\t") for line in out] == [1, 1, 1]  # one tab per line: name, answer


@pytest.mark.parametrize(
    "env, words",
    [({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"), ({"LONGQA_TOKENIZER_WORKERS": "many"}, "LONGQA_TOKENIZER_WORKERS='many'"),
     ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK='5'")],
)
def test_bad_environment_is_exit_2(run, corpus: Path, monkeypatch: pytest.MonkeyPatch, env: dict, words: str, no_engine) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert_error(run("ask", corpus / "a.txt", QS[0], "--each" if "RANK" in env else "-q"), 2, words)


def test_an_internal_error_is_one_line_with_the_debug_hint(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from longqa.engine import Engine

    def boom(self, pairs):
        raise ValueError()

    monkeypatch.setattr(Engine, "answer_pairs", boom)
    assert_error(run("ask", corpus / "a.txt", QS[0], "-q"), 1,
                 "internal error while answering: ValueError: no message (set LONGQA_DEBUG=1 for a traceback)")


def test_a_signal_a_library_swallowed_still_ends_the_run(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside numpy's import under torch's surfaced as 'ImportError: cannot load module more than once'
    or was lost, and the run went on to print answers: the signal received decides the outcome."""
    import signal

    from longqa import launch
    from longqa.engine import Engine

    real_read = Engine.read

    def read_and_swallow(self, *args, **kwargs):
        try:
            launch._stop(signal.SIGINT, None)  # what the handler does when Ctrl-C comes
        except BaseException:
            pass  # a library that catches everything
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "read", read_and_swallow)
    assert run("ask", corpus / "a.txt", QS[0]) == (130, [], "longqa: interrupted\n")
    monkeypatch.setattr(Engine, "read", real_read)
    assert run("ask", corpus / "a.txt", QS[0], "-q")[0] == 0  # the next run starts afresh
