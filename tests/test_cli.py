"""The command-line contract (../shared/cli.md), mostly in-process through longqa.cli.main."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from conftest import babi_text, torchrun
from safetensors import safe_open
from safetensors.torch import load_file

from longqa import __version__, cli
from longqa.lab.generate import babi

torch.set_num_threads(1)

QS = ["Where is Mary?", "Where is John?", "Where is the milk?"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "a.txt").write_text(babi_text(40, seed=1) + "\nSandra journeyed to the hallway.\n", encoding="utf-8")
    (d / "b.txt").write_text(babi_text(23, seed=2) + " Daniel went back", encoding="utf-8")
    (d / "sub").mkdir()
    (d / "sub" / "c.txt").write_text(babi_text(7, seed=3), encoding="utf-8")
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
    assert rc == 0 and len(out) == 2  # answered all the same, a guess
    assert err.splitlines() == ["longqa: warning: 'Who is Mary?' is not one of the question forms "
                                "the model was trained on (README: What it does), so its answer is a guess"]
    # A second SOURCE given by mistake is taken as a question; the warning says so.
    rc, out, err = run("ask", "a.txt", "b.txt", *[f"Where is Mary {i}?" for i in range(50)], "-q")
    assert rc == 0 and len(out) == 51 and len(err.splitlines()) == 1
    assert err.startswith("longqa: warning: 51 questions are not question forms") and "'b.txt' names a file" in err


def test_stdout_holds_only_answers(run, corpus: Path) -> None:
    rc, out, err = run("ask", corpus / "a.txt", *QS)
    assert rc == 0 and len(out) == len(QS)
    assert "tokens" in err and err.startswith("longqa: ")
    assert not any("tokens" in line for line in out)
    rc, quiet_out, quiet_err = run("ask", corpus / "a.txt", *QS, "-q")
    assert rc == 0 and quiet_out == out and quiet_err == ""


def test_multiline_answer_stays_on_one_line(run, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from longqa.engine import Engine

    monkeypatch.setattr(Engine, "answer", lambda self, mems, qs: [["the\nkitchen\r\nnow"] * len(qs) for _ in mems])
    rc, out, _ = run("ask", corpus / "a.txt", *QS, "-q")
    assert rc == 0 and out == ["the kitchen now"] * len(QS)
    monkeypatch.setattr(Engine, "answer", lambda self, mems, qs: [["in\tthe garden"] * len(qs) for _ in mems])
    rc, out, _ = run("ask", corpus, QS[0], "-q", "--each")
    assert rc == 0 and [line.split("\t")[1] for line in out] == ["in the garden"] * 3
    monkeypatch.setattr(Engine, "answer", lambda self, mems, qs: [["the\nkitchen\r\nnow"] * len(qs) for _ in mems])
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


def test_unwritable_save_is_a_runtime_failure(run, corpus: Path, tmp_path: Path) -> None:
    assert_error(run("memorize", corpus / "a.txt", "--save", tmp_path / "no" / "dir" / "s", "-q"), 1, "cannot", "no/dir/s")


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


@pytest.mark.parametrize("args", [["ask", "nope.txt", "Where is Mary?"], ["ask", "README.md", " "],
                                  ["memorize", "nope.txt", "--save", "s"], ["memorize", "-", "-", "--save", "s"]])
def test_bad_input_is_refused_before_torch_is_imported(args: list[str]) -> None:
    """Checks that need no model come first: torch's import alone costs seconds."""
    code = "import sys; from longqa.cli import main; code = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(code)"
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, cwd=root, timeout=60)
    assert p.returncode == 2, p.stderr.decode()
    assert p.stdout.decode().strip() == "False"


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


def test_question_longer_than_a_segment_is_a_clear_input_error(tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("Mary went to the kitchen.\n")
    p = longqa("ask", doc, "Where is " + "Mary and " * 400 + "John?")
    assert p.returncode == 2 and p.stdout == b""
    lines = p.stderr.decode().splitlines()
    assert lines[-1].startswith("longqa: error: question too long:") and "Traceback" not in p.stderr.decode()
