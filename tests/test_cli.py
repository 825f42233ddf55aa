"""Command line and run_all.sh: bad input gives one line naming the fix, a non-zero exit, and nothing
half-written; an interrupted activation run leaves a usable cache."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from sparseprobe_core import __main__ as cli
from sparseprobe_core import activations, concepts, config, models, paths
from sparseprobe_core.models import DEFAULT_MODEL, EMBEDDED

PY = sys.executable


def _main(*args, env=None) -> subprocess.CompletedProcess:
    """`python -m sparseprobe_core ARGS` run in this process (its `main`; argparse's usage errors exit 2), so
    a test pays no second start-up of torch and transformers. The entry point itself, and what must be set
    before those are imported (HF_HUB_OFFLINE), go through a real process: `_cli`."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env or {}), redirect_stdout(out), redirect_stderr(err):
        try:
            status = cli.main(list(args))
        except SystemExit as exit_:
            status = exit_.code
    return subprocess.CompletedProcess(["sparseprobe", *args], status, out.getvalue(), err.getvalue())


def _cli(*args, env=None, timeout=600):
    """`python -m sparseprobe_core ARGS` in a new process."""
    return subprocess.run(
        [PY, "-m", "sparseprobe_core", *args],
        cwd=paths.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _one_error_line(result, pattern, status=1):
    """A data or run-time error: exit status 1 and exactly one `error:` line naming the problem."""
    assert result.returncode == status, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], result.stderr[-2000:]


def _usage_error(result, pattern):
    """A usage error: argparse's exit status 2 and its `... error: ...` line."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert pattern in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]


@pytest.fixture(scope="module")
def small_concept(tmp_path_factory):
    """A 25+25 real-text concept cut from a shipped one (the first rows of each class)."""
    src = paths.CONCEPTS / "python_number.csv"
    rows = list(csv.DictReader(src.open(encoding="utf-8")))
    picked = [r for r in rows if r["label"] == "1"][:25] + [r for r in rows if r["label"] == "0"][:25]
    path = tmp_path_factory.mktemp("concept") / "tiny_numbers.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(picked)
    return path


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--concept", "python_number", "--layer", "1", "--method", "magic"], "invalid choice: 'magic'"),
        (["--concept", "python_number", "--layer", "1", "--k", "0"], "must be a positive number"),
        (["--concept", "python_number"], "the following arguments are required: --layer"),
    ],
)
def test_rank_usage_errors_exit_2(args, pattern):
    _usage_error(_main("rank", *args), pattern)


def test_rank_missing_file_exits_1():
    _one_error_line(_main("rank", "--concept", "missing.csv", "--layer", "1"), "cannot be read")


def test_rank_bad_file_content(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,1\n")
    _one_error_line(_main("rank", "--concept", str(bad), "--layer", "1"), "needs columns 'text,label'")


@pytest.mark.model
def test_rank_unknown_model_offline(small_concept):
    result = _cli(
        "rank",
        "--concept",
        str(small_concept),
        "--layer",
        "1",
        "--model",
        "no-org/no-model-xyz",
        env={"HF_HUB_OFFLINE": "1"},
    )
    _one_error_line(result, "cannot be fetched offline")


def test_help_version_and_hidden_plumbing():
    top = _cli("--help")
    assert top.returncode == 0 and "rank" in top.stdout
    assert not {"execute", "check-run", "prepare-models", "report"} & set(top.stdout.split())
    rank_help = _main("rank", "--help").stdout
    assert "sparse_prober_contribution" in rank_help and "f_stat" in rank_help  # --method lists its choices
    version = _main("--version")
    assert version.returncode == 0 and version.stdout.startswith("sparseprobe ")
    usage = subprocess.run(["bash", "run_all.sh", "--help"], cwd=paths.ROOT, capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("Usage: ./run_all.sh") and "--concept FILE" in usage.stdout


_SLOW_DEQUANTIZE = """
import os, time
from pathlib import Path

OUT = Path(os.environ["STOPPED_PREPARE_OUT"])


def dequantize(name):  # a de-quantization's shape: a temporary file, removed in `finally`
    tmp = OUT / f"{name}.tmp"
    tmp.touch()
    (OUT / f"{name}.pid").write_text(str(os.getpid()))
    try:
        time.sleep(120)
    finally:
        tmp.unlink()
        (OUT / f"{name}.cleaned").touch()
"""
_STOPPED_PREPARE = """
import sys
import slow_dequantize
from sparseprobe_core import __main__ as cli, models

models.dequantized_copy = slow_dequantize.dequantize
models.has_dequantized_copy = lambda name: False
sys.exit(cli.main(["prepare-models"]))
"""


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker states from /proc")
def test_a_stopped_prepare_models_exits_through_its_clean_up(tmp_path):
    """run_all.sh stops a set-up's de-quantization with SIGTERM when it ends early: the command and its worker
    processes must end through their `finally` blocks (atomic_write then removes its temporary folder), not at
    once, and leave no worker running. The workers' function lives in a module (not the `-c` script), so that
    any start method of the pool can import it."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "slow_dequantize.py").write_text(_SLOW_DEQUANTIZE)
    path = os.pathsep.join([str(tmp_path), str(paths.ROOT)])
    env = {**os.environ, "STOPPED_PREPARE_OUT": str(out), "PYTHONPATH": path}
    stderr = tmp_path / "stderr"  # a file, not a pipe: workers left running would hold a pipe open
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [PY, "-c", _STOPPED_PREPARE], cwd=paths.ROOT, env=env, stderr=err, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.pid"))) < len(EMBEDDED):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the workers never started: {stderr.read_text()[-2000:]}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM, stderr.read_text()[-2000:]
        assert sorted(p.name for p in out.iterdir() if p.suffix != ".pid") == sorted(
            f"{name}.cleaned" for name in EMBEDDED
        ), "a worker was not stopped through its clean-up"
        assert not [p for p in out.glob("*.pid") if _alive(int(p.read_text()))], "a worker still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what a failed check left running


def test_prepare_models_leaves_a_float32_copy_of_every_embedded_model():
    """run_all.sh's set-up de-quantizes the embedded models once; a second call finds every copy and is silent."""
    from sparseprobe_core import models

    first = _cli("prepare-models")
    assert first.returncode == 0, first.stderr[-2000:]
    assert all(models.has_dequantized_copy(name) for name in models.EMBEDDED)
    again = _cli("prepare-models")
    assert again.returncode == 0 and again.stderr == "" and again.stdout == ""
    hub = _cli("prepare-models", "no-org/a-hub-model")  # run_all.sh --model NAME: a hub model has nothing to do
    assert hub.returncode == 0 and hub.stderr == ""


def test_dequantization_parses_each_gguf_file_once(tmp_path):
    """While de-quantizing, the readers transformers builds for the tokenizer, the config and the weights are one
    (1.6x faster for Gemma 3, the same bytes: benchmarks/bench_dequantize.py); the plain reader is back afterwards. Also
    fails if transformers stops looking the reader up in `gguf` at each call, which would undo the saving."""
    import inspect

    import gguf
    import transformers
    from transformers import modeling_gguf_pytorch_utils

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.zeros((2, 3), dtype=np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    plain = gguf.GGUFReader
    with models._gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(path) is first and first.tensors[0].name == "w"
    assert gguf.GGUFReader is plain and gguf.GGUFReader(path) is not first
    assert "from gguf import GGUFReader" in inspect.getsource(modeling_gguf_pytorch_utils.load_gguf_checkpoint)

    # and dequantized_copy reads the GGUF file for the tokenizer and for the weights under it (stopped at the second
    # read; nothing is left behind)
    class Stop(Exception):
        pass

    seen = []

    def read(stop: bool):
        def from_pretrained(*args, **kwargs):
            seen.append(gguf.GGUFReader is not plain)
            if stop:
                raise Stop
            return mock.Mock()

        return from_pretrained

    with (
        mock.patch.object(paths, "ROOT", tmp_path),
        mock.patch.object(transformers.AutoTokenizer, "from_pretrained", read(stop=False)),
        mock.patch.object(transformers.AutoModelForCausalLM, "from_pretrained", read(stop=True)),
        pytest.raises(Stop),
    ):
        models.dequantized_copy(DEFAULT_MODEL)
    assert seen == [True, True] and gguf.GGUFReader is plain
    assert not any((tmp_path / ".cache" / "models").iterdir())


def test_plumbing_commands_do_not_import_the_rankers():
    """run_all.sh calls the plumbing commands four or five times a run: their parsing leaves scikit-learn's estimators
    (the rankers' 2 s import) alone; rank still checks its --method."""
    code = (
        "import sys; from sparseprobe_core import __main__ as cli; p = cli._parser(); "
        "p.parse_args(['prepare-models']); p.parse_args(['check-run', '--concept', 'x.csv']); "
        "assert 'sparseprobe_core.rankers' not in sys.modules, 'imported'; "
        "p.parse_args(['rank', '--concept', 'x', '--layer', '1', '--method', 'f_stat'])"
    )
    result = subprocess.run([PY, "-c", code], cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_console_script_is_installed():
    script = Path(PY).parent / "sparseprobe"
    assert script.exists(), "pip install -e . declares the console script `sparseprobe`"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "sparseprobe" in result.stdout


@pytest.mark.model
@pytest.mark.parametrize("model", list(EMBEDDED))
def test_rank_checks_layer_and_k_against_the_model(small_concept, model, monkeypatch):
    """An embedded model's sizes come from its copy's config: a bad --layer or --k fails before the load."""
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded before checking --layer and --k"))
    hf = json.loads((models.dequantized_copy(model) / "config.json").read_text())  # the sizes, without loading it
    n_layers, d_mlp = hf["num_hidden_layers"], hf["intermediate_size"]
    rank = ["rank", "--concept", str(small_concept), "--model", model]
    _one_error_line(_main(*rank, "--layer", str(n_layers)), "out of range")
    _one_error_line(_main(*rank, "--layer", "2", "--k", str(d_mlp + 1)), f"exceeds the layer's {d_mlp} neurons")


@pytest.mark.model
@pytest.mark.parametrize("model", [None, "gemma3-270m"])
def test_rank_prints_what_each_neuron_does(small_concept, tmp_path, model, monkeypatch):
    chosen = ["--model", model] if model else []
    args = ["rank", "--concept", str(small_concept), "--layer", "3", "--k", "5", "--json", *chosen]
    env = {"SPARSEPROBE_CACHE": str(tmp_path)}
    monkeypatch.setattr(models, "load_model", functools.cache(models.load_model))  # the two calls load it once
    result = _main(*args, "--method", "mean_diff", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["model"] == (model or "smollm2-135m")
    native = out["neurons"]
    assert [n["rank"] for n in native] == [1, 2, 3, 4, 5] and len({n["neuron"] for n in native}) == 5
    assert all(n["writing_norm"] > 0 and -1 <= n["alignment"] <= 1 and 0 <= n["auroc"] <= 1 for n in native)
    assert np.all(np.diff([n["score"] for n in native]) <= 0)  # mean_diff's own statistic, descending
    # |E[a|1] - E[a|0]| is mean_diff's score, and the printed class shift is that difference
    assert all(n["score"] == pytest.approx(abs(n["delta_a"]), rel=1e-5) for n in native)
    ours = json.loads(_main(*args, env=env).stdout)["neurons"]  # the prober: an order, so no rank-index "score"
    assert "score" not in ours[0] and all(np.isfinite(n["contribution"]) for n in ours)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'fast'; use one of: paper, ci"):
        config.make_config(profile="fast")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "fast"], "unknown profile 'fast'"),
        (["--profile"], "--profile needs a value"),
        (["--layers", ""], "--layers needs a value"),
        (["--profile", "ci", "--profile", "paper"], "--profile is given twice"),
        (["--setup-only", "--report-only"], "--setup-only takes no other option (got --report-only)"),
        (["--report-only", "--concept", "x.csv"], "--report-only takes no other option (got --concept)"),
        (["--model"], "--model needs a value"),
        (["--layers", "--setup-only"], "--layers needs a value"),  # the next option is not taken for a value
    ],
)
def test_run_all_usage_errors_exit_2_before_any_set_up(args, message):
    result = subprocess.run(["bash", "run_all.sh", *args], cwd=paths.ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "smollm2-136m"], "unknown model 'smollm2-136m'; did you mean smollm2-135m?"),
        (["--model", "gemma3-270m", "--layers", "5,40"], "include [40], but gemma3-270m has layers 0..17"),
        (["--layers", "20"], "include [20], but gemma3-270m has layers 0..17"),  # both embedded models run
        (["--layers", "3,3"], "give each layer once"),
        (["--dtype", "int8"], "unknown dtype 'int8'"),
        (["--device", "foo"], "unknown device 'foo'"),
        (["--model=-x"], "unknown model '-x'"),
    ],
)
def test_check_run_rejects_bad_options_in_one_line(args, message):
    result = _main("check-run", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_check_run_accepts_a_valid_run_and_a_hub_model():
    assert _main("check-run", "--model", "gemma3-270m", "--layers", "3,17").returncode == 0
    assert _main("check-run", "--model", "no-org/a-hub-model", "--layers", "40").returncode == 0  # depth unknown


@pytest.mark.parametrize("name", ["ci", "a,b", "-x", ".hidden"])
def test_check_run_rejects_concept_names_that_cannot_name_a_run(tmp_path, name):
    src = tmp_path / f"{name}.csv"
    src.write_text("text,label\n" + "".join(f"zero {i},0\none {i},1\n" for i in range(25)))
    result = _main("check-run", f"--concept={src}")
    assert result.returncode == 1 and "names the run (runs/<name>/); rename the file" in result.stderr


def test_report_without_a_finished_run_says_so(tmp_path):
    result = _main("report", "--figures", str(tmp_path), "--out", str(tmp_path / "page"))
    assert (
        result.returncode == 1 and "MANIFEST.json is missing" in result.stderr and "run ./run_all.sh" in result.stderr
    )
    assert not (tmp_path / "page").exists()


def test_publish_replaces_each_destination_whole(tmp_path):
    stage, figures, notebooks = tmp_path / "stage", tmp_path / "figures", tmp_path / "notebooks"
    slug = config.model_slug(config.DEFAULT_MODEL)
    (stage / "figures" / slug).mkdir(parents=True)
    (stage / "figures" / slug / "new.png").write_bytes(b"new")
    (stage / "figures" / "MANIFEST.json").write_text("{}")
    (stage / slug).mkdir()
    (stage / slug / "01_x.ipynb").write_text("new")
    (figures / slug).mkdir(parents=True)
    (figures / slug / "gone.png").write_bytes(b"old")  # a figure the notebooks no longer make
    notebooks.mkdir()
    (notebooks / "01_x.ipynb").write_text("old")
    cli._publish(stage, {config.DEFAULT_MODEL: []}, notebooks, figures)
    assert sorted(p.name for p in (figures / slug).iterdir()) == ["new.png"]
    assert (notebooks / "01_x.ipynb").read_text() == "new" and (figures / "MANIFEST.json").read_text() == "{}"
    leftovers = [p.name for p in [*figures.iterdir(), *notebooks.iterdir()] if p.name.startswith(".")]
    assert leftovers == []


def test_check_run_warns_about_repeated_rows_in_the_concept(tmp_path):
    src = tmp_path / "My Concept.csv"
    rows = "".join(f"zero {i},0\n" for i in range(25)) + "".join(f"one {i},1.0\n" for i in range(25))
    src.write_text("Text,Label\n" + rows + "one 3,1\none 4,1\n")
    result = _main("check-run", "--concept", str(src))
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert "dropped 2 repeated row(s)" in result.stderr and "50 texts (25 label 1 / 25 label 0)" in result.stderr


def test_check_run_names_the_models_whose_layers_wait_for_their_copy(monkeypatch):
    """run_all.sh checks the layers again after the de-quantization only for the models check-run names."""
    run = ("check-run", "--model", "gemma3-270m", "--layers", "3")
    assert _main(*run).stdout == ""  # its copy exists (the test command sets up both models first)
    monkeypatch.setattr(models, "copy_sizes", lambda name: None)
    assert _main(*run).stdout == "gemma3-270m\n" and _main("check-run", "--model", "gemma3-270m").stdout == ""


def test_interrupted_activation_run_then_rerun(bridge, model_name, small_concept, tmp_path, monkeypatch):
    """A collection killed mid-way leaves its finished batches in a partial store, never a partial entry; the
    rerun resumes from them and gives the numbers of an uninterrupted run."""
    hooks = [activations.HIDDEN.format(layer=layer) for layer in range(0, bridge.cfg.n_layers, 3)]
    n_texts = 20  # 10 batches: the poll below (every 50 ms) sees the first one well before the last (0.2-0.3 s each)
    script = (
        f"from sparseprobe_core import models, activations as a, concepts as c\n"
        f"a.CHECKPOINT_S = 0.0\n"  # every finished batch is listed at once
        f"b = models.load_model({model_name!r}); t = list(c.load_concept({str(small_concept)!r}).texts)[:{n_texts}]\n"
        f"a.collect(b, {model_name!r}, t, {hooks!r}, batch_size=2)\n"
    )
    proc = subprocess.Popen(
        [PY, "-c", script],
        cwd=paths.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SPARSEPROBE_CACHE": str(tmp_path)},
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*.partial/done.npz")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-collection: the forward pass over the 10 batches takes longer
    proc.wait()
    assert list(tmp_path.glob(".*.partial/done.npz")) and not list(tmp_path.glob("*" + activations.ENTRY_SUFFIX))
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    texts = list(concepts.load_concept(small_concept).texts)[:n_texts]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a corrupted entry would warn before being recomputed
        got = activations.collect(bridge, model_name, texts, hooks, batch_size=2)
    fresh = activations.collect(bridge, model_name, texts, hooks, batch_size=2, use_cache=False)
    for h in hooks:
        np.testing.assert_array_equal(got[h], fresh[h])
    assert len(list(tmp_path.glob("*" + activations.ENTRY_SUFFIX))) == len(hooks)
