"""`vlprompt serve`: a real uvicorn process on 127.0.0.1 serving a run trained on the mini world.
Its answers equal `Run.predict`'s, concurrent requests each get their own results, every bad
upload is one line `{"error": ...}` with a 4xx code and the server goes on, memory stays bounded,
SIGTERM stops it; the page works in a headless chromium where one is installed. The batching
queue, the model holder and the input checks are also tested in this process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import vlprompt
from vlprompt.cli import main
from vlprompt.errors import ServeError

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from vlprompt import serve as served  # noqa: E402  (after the skips: it needs no extra itself)

SRC = Path(__file__).resolve().parents[1] / "src"
START_TIMEOUT_S = 180  # importing torch and loading the run on a busy 2-core machine
MAX_BATCH = 8  # the server's --max-batch: a request takes at most 32 files
MAX_UPLOAD_MB = 1
N_IMAGES = 24


# ---- the trained run and the server -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CoOp run on mini_colors (1 shot, 1 epoch) and 24 test images of the mini world."""
    base = tmp_path_factory.mktemp("serve")
    home = base / "home"
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        run = vlprompt.train("coop", "mini_colors", root=base / "mini", shots=1, epochs=1,
                             evaluate=False, progress=False, output_dir=base / "run")  # fmt: skip
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old
    images = sorted((base / "mini").rglob("test/*/*.png"))[::3][:N_IMAGES]
    assert len(images) == N_IMAGES
    expected = dict(zip(images, run.predict(images, topk=5)))
    return SimpleNamespace(base=base, home=home, run_dir=base / "run", run=run, images=images,
                           expected=expected)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, trust_env=False)  # no proxy: 127.0.0.1 only


def _wait_until_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with _client(url) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if client.get("/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    pytest.fail(f"no /health within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server(trained):
    port = _free_port()
    log = trained.base / "server.log"
    env = {**os.environ, "HOME": str(trained.home), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, "-m", "vlprompt.cli", "serve", str(trained.run_dir),
               "--port", str(port), "--max-batch", str(MAX_BATCH),
               "--max-upload-mb", str(MAX_UPLOAD_MB), "--body-timeout-s", "2"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(proc, url, log)
        yield SimpleNamespace(proc=proc, url=url, port=port, log=log, rss_kb=_rss_kb(proc.pid))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _check_answer(entry: dict, name: str, want: list[tuple[str, float]]) -> None:
    assert entry["file"] == name
    assert [t["class"] for t in entry["top"]] == [c for c, _ in want]
    got = [t["probability"] for t in entry["top"]]
    assert np.allclose(got, [p for _, p in want], rtol=0, atol=1e-5), (got, want)


def _assert_healthy(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


# ---- answers ------------------------------------------------------------------------------------
def test_health_labels_and_the_page(server, trained):
    with _client(server.url) as client:
        health = client.get("/health").json()
        assert {k: health[k] for k in ("status", "method", "classes")} == {
            "status": "ok", "method": "coop", "classes": 10}  # fmt: skip
        assert client.get("/labels").json() == trained.run.classnames
        page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="file"' in page.text and 'fetch("predict"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external asset


def test_predictions_equal_run_predict(server, trained):
    one, *several = trained.images[:5]
    with _client(server.url) as client:
        answer = client.post("/predict", files=_files((one.name, one.read_bytes())))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["temperature"] == 1.0 and len(body["predictions"]) == 1
        _check_answer(body["predictions"][0], one.name, trained.expected[one])
        names = [f"{i}-{p.name}" for i, p in enumerate(several)]
        answer = client.post("/predict", params={"topk": 3},
                             files=_files(*[(n, p.read_bytes()) for n, p in zip(names, several)]))  # fmt: skip
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == len(several)
    for entry, name, path in zip(predictions, names, several):
        _check_answer(entry, name, trained.expected[path][:3])


def test_concurrent_requests_each_get_their_own_result(server, trained):
    """24 requests from 8 threads, one distinct image each: none lost, none answered with
    another image's result (the 24 expected answers differ from each other)."""
    tops = {tuple(p for _, p in trained.expected[path]) for path in trained.images}
    assert len(tops) == N_IMAGES  # a swapped answer would show
    barrier = threading.Barrier(8, timeout=60)

    def ask(i: int) -> tuple[int, dict]:
        if i < 8:
            barrier.wait()  # the first eight leave together
        path = trained.images[i]
        with _client(server.url) as client:
            answer = client.post("/predict", files=_files((f"img{i}.png", path.read_bytes())))
        assert answer.status_code == 200, answer.text
        return i, answer.json()

    with ThreadPoolExecutor(8) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(ask, i) for i in range(N_IMAGES)]]
    assert sorted(i for i, _ in results) == list(range(N_IMAGES))
    for i, body in results:
        (entry,) = body["predictions"]
        _check_answer(entry, f"img{i}.png", trained.expected[trained.images[i]])


# ---- bad requests -------------------------------------------------------------------------------
def _png(size=(8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _bomb(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height pixels (IHDR patched, CRC fixed)."""
    data = bytearray(_png((1, 1)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("cat.png", _png())
    return out.getvalue()


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "vlpromptboundary") -> bytes:
    body = b""
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                 f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + b"\r\n"  # fmt: skip
    return body + f"--{boundary}--\r\n".encode()


def _chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]


OVERSIZE = b"\x89PNG" + bytes(int(1.5 * MAX_UPLOAD_MB * 2**20))
BAD = {  # name: (request kwargs, status, words of the error)
    "text file": (dict(files=_files(("notes.txt", b"just some text\n"))), 400, "not an image"),
    "truncated png": (dict(files=_files(("cut.png", _png((64, 64))[:60]))), 400, "truncated"),
    "zip": (dict(files=_files(("photos.zip", _zip()))), 400, "not an image"),
    "empty file": (dict(files=_files(("nothing.png", b""))), 400, "empty"),
    "bomb 100000x100000": (dict(files=_files(("bomb.png", _bomb(100_000, 100_000)))), 413,
                           "--max-pixels"),
    "bomb 10000x5000": (dict(files=_files(("big.png", _bomb(10_000, 5_000)))), 413,
                        "10000x5000"),
    "oversize": (dict(files=_files(("huge.png", OVERSIZE))), 413, "--max-upload-mb"),
    "oversize streamed": (
        dict(content=_chunks(_multipart([("huge.png", OVERSIZE)])),
             headers={"content-type": "multipart/form-data; boundary=vlpromptboundary"}),
        413, "--max-upload-mb"),
    "too many files": (dict(files=_files(*[(f"{i}.png", _png()) for i in range(4 * MAX_BATCH + 1)])),
                       413, "more than 32 files"),
    "one bad file among good": (dict(files=_files(("ok.png", _png()), ("bad.png", b"GIF89a"))),
                                400, "bad.png"),
    "no files field": (dict(files=[("images", ("a.png", _png(), "image/png"))]), 400, "'files'"),
    "text in files field": (dict(data={"files": "hello"}, files=[("x", ("a.png", _png()))]), 400,
                            "not a file"),
    "json body": (dict(json={"files": ["a.png"]}), 415, "multipart/form-data"),
    "topk 0": (dict(files=_files(("a.png", _png())), params={"topk": 0}), 400, "topk"),
    "coverage that was not calibrated": (dict(files=_files(("a.png", _png())),
                                              params={"coverage": 0.8}), 400, "conformal"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_is_one_line_with_a_4xx_and_the_server_goes_on(server, case):
    kwargs, status, words = BAD[case]
    if case == "oversize streamed":  # a generator is used up: rebuild it
        kwargs = {**kwargs, "content": _chunks(_multipart([("huge.png", OVERSIZE)]))}
    with _client(server.url) as client:
        answer = client.post("/predict", **kwargs)
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert list(body) == ["error"] and words in body["error"], body
        assert "\n" not in body["error"] and "Traceback" not in answer.text
    with _client(server.url) as client:
        _assert_healthy(client)


def test_unknown_paths_and_methods_are_one_line(server):
    with _client(server.url) as client:
        for answer, status in ((client.get("/admin"), 404), (client.get("/predict"), 405)):
            assert answer.status_code == status
            assert list(answer.json()) == ["error"] and "POST /predict" in answer.json()["error"]


def test_a_file_name_is_echoed_as_its_last_component_only(server, trained):
    path = trained.images[0]
    sent = ["../../etc/evil.png", "C:\\Users\\me\\cat.png", "/abs/dir/dog.png", "..", "./"]
    with _client(server.url) as client:
        answer = client.post("/predict", files=_files(*[(n, path.read_bytes()) for n in sent]))
    assert answer.status_code == 200, answer.text
    assert [p["file"] for p in answer.json()["predictions"]] == [
        "evil.png", "cat.png", "dog.png", "file-4", "file-5"]  # fmt: skip


def test_a_slow_client_gets_408(server):
    """The body must arrive within --body-timeout-s (2 s here): a client that stalls after the
    headers and a few bytes is answered 408 and the connection closed."""
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")  # fmt: skip
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(head)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b'{"error":' in reply and b"--body-timeout-s" in reply
    assert 1.5 < time.monotonic() - start < 20


def test_memory_stays_bounded_after_bad_requests(server, trained):
    """RSS after rounds of bombs, oversize uploads, zips and good images stays within 300 MB of
    the RSS right after start."""
    path = trained.images[0]
    with _client(server.url) as client:
        for _ in range(3):
            for case in ("bomb 100000x100000", "bomb 10000x5000", "oversize", "zip"):
                kwargs, status, _ = BAD[case]
                assert client.post("/predict", **kwargs).status_code == status
            files = _files(*[(f"{i}.png", path.read_bytes()) for i in range(4 * MAX_BATCH)])
            assert client.post("/predict", files=files).status_code == 200
        _assert_healthy(client)
    grown_mb = (_rss_kb(server.proc.pid) - server.rss_kb) / 1024
    assert grown_mb < 300, f"RSS grew by {grown_mb:.0f} MB"


# ---- the page in a browser ----------------------------------------------------------------------
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-proxy-server", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--disable-default-apps", "--no-first-run")  # fmt: skip


def test_the_page_shows_the_top_class_in_a_headless_browser(server, trained):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no chromium and chromedriver here (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(executable_path=driver_path))  # fmt: skip
    except WebDriverException as exc:
        pytest.skip(f"chromium cannot start here: {str(exc.msg).splitlines()[0]}")
    image = trained.images[1]
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url + "/")
        driver.find_element(By.ID, "file").send_keys(str(image))
        rows = WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#results li .label"))  # fmt: skip
        shown = [r.text for r in rows]
        status = driver.find_element(By.ID, "status")
        assert status.get_attribute("class") != "error", status.text
        assert image.name in status.text
    finally:
        driver.quit()
    assert shown == [c for c, _ in trained.expected[image]]


# ---- the command line ---------------------------------------------------------------------------
def test_a_port_in_use_a_missing_run_and_bad_limits_are_one_line(server, trained, tmp_path, capsys):
    cases = [
        (["serve", str(trained.run_dir), "--port", str(server.port)], "cannot listen"),
        (["serve", str(tmp_path / "no_run"), "--port", "0"], "no_run"),
        (["serve", str(trained.run_dir), "--max-batch", "0"], "--max-batch"),
        (["serve", str(trained.run_dir), "--max-upload-mb", "-1"], "--max-upload-mb"),
        (["serve", str(trained.run_dir), "--port", "70000"], "--port"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("vlprompt: error:") and words in err and "\n" not in err, err


def test_serve_help_imports_neither_torch_nor_the_server():
    code = ("import contextlib, io, json, sys\nfrom vlprompt.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['serve', '--help'])\n    except SystemExit: pass\n"
            "print(json.dumps([m in sys.modules for m in ('torch', 'fastapi', 'uvicorn')]))\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, timeout=60)  # fmt: skip
    assert json.loads(out.stdout) == [False, False, False]


# ---- in this process: the queue, the model holder, the checks -----------------------------------
def _batches(
    max_batch: int, max_wait_s: float, gaps: list[float], coming=None
) -> tuple[list[int], list]:
    """Submit one image per gap (sleeping that long first); the sizes of the batches made and
    each image's row."""
    sizes: list[int] = []

    def classify(batch: torch.Tensor) -> np.ndarray:
        sizes.append(len(batch))
        return batch.numpy() * 10

    async def go() -> list:
        with ThreadPoolExecutor(1) as pool:
            batcher = served.Batcher(classify, max_batch, max_wait_s, pool, coming)
            batcher.start()
            futures = []
            for i, gap in enumerate(gaps):
                if gap:
                    await asyncio.sleep(gap)
                futures.append(batcher.submit(torch.tensor([float(i)])))
            rows = await asyncio.wait_for(asyncio.gather(*futures), 30)
            await batcher.stop()
            return rows

    return sizes, asyncio.run(go())


def test_the_batcher_fills_batches_and_gives_each_image_its_row():
    sizes, rows = _batches(4, 0.5, [0] * 10)
    assert sizes == [4, 4, 2]
    assert [float(r[0]) for r in rows] == [10.0 * i for i in range(10)]


def test_the_batcher_waits_at_most_max_wait():
    sizes, rows = _batches(32, 0.01, [0, 0.3, 0.3])
    assert sizes == [1, 1, 1] and [float(r[0]) for r in rows] == [0.0, 10.0, 20.0]


def test_the_batcher_waits_only_while_images_are_coming():
    start = time.monotonic()
    sizes, _ = _batches(32, 30.0, [0], coming=lambda: 0)  # a lone image: no wait
    assert sizes == [1] and time.monotonic() - start < 10
    start = time.monotonic()
    sizes, _ = _batches(32, 30.0, [0, 0.3, 0.3], coming=iter([1, 1, 0]).__next__)
    assert sizes == [3]  # waited while one was announced, ran once none was
    assert time.monotonic() - start < 10


def test_a_failing_forward_fails_its_batch_only():
    def classify(batch: torch.Tensor) -> np.ndarray:
        if float(batch[0, 0]) == 0.0:
            raise RuntimeError("out of memory")
        return batch.numpy()

    async def go() -> tuple[str, float]:
        with ThreadPoolExecutor(1) as pool:
            batcher = served.Batcher(classify, 8, 0.0, pool)
            batcher.start()
            with pytest.raises(RuntimeError) as info:
                await asyncio.wait_for(batcher.submit(torch.tensor([0.0])), 30)
            row = await asyncio.wait_for(batcher.submit(torch.tensor([5.0])), 30)
            await batcher.stop()
            return str(info.value), float(row[0])

    assert asyncio.run(go()) == ("out of memory", 5.0)


def test_the_batcher_leaves_out_images_whose_request_went_away():
    seen: list[list[float]] = []

    async def go() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = served.Batcher(lambda b: seen.append(b.tolist()) or b.numpy(), 8, 0.2, pool)
            batcher.start()
            gone, kept = batcher.submit(torch.tensor([1.0])), batcher.submit(torch.tensor([2.0]))
            gone.cancel()
            row = await asyncio.wait_for(kept, 30)
            await batcher.stop()
            return float(row[0])

    assert asyncio.run(go()) == 2.0 and seen == [[[2.0]]]


def test_the_model_computes_the_class_side_once_and_matches_run_predict(trained, monkeypatch):
    method = trained.run.method
    calls = []
    original = method.class_features
    monkeypatch.setattr(method, "class_features", lambda: calls.append(1) or original())
    model = served.ServedModel(trained.run)
    paths = trained.images[:4]
    with ThreadPoolExecutor(1) as thread:  # as in the server: forwards in another thread
        thread.submit(model.open).result()
        batch = torch.stack([model.tensor(p.read_bytes(), p.name, 10**6) for p in paths])
        rows = [thread.submit(model.probabilities, batch).result() for _ in range(3)]
        thread.submit(model.close).result()
    assert len(calls) == 1 and not method._holding  # noqa: SLF001
    for row, path in zip(rows[-1], paths):
        want = trained.expected[path]
        assert np.allclose([row[trained.run.classnames.index(c)] for c, _ in want],
                           [p for _, p in want], rtol=0, atol=1e-5)  # fmt: skip


def test_decode_checks_pixels_before_decoding_and_names_the_file():
    with pytest.raises(ServeError) as info:
        served.decode_upload(_bomb(5000, 5000), "x.png", 256, max_pixels=10**6)
    assert info.value.status == 413 and "x.png: 5000x5000" in str(info.value)
    for data, words in ((b"%!PS-Adobe-3.0 EPSF-3.0\n", "not an image"), (_zip(), "not an image"),
                        (_png((64, 64))[:60], "x.png cannot be decoded")):  # fmt: skip
        with pytest.raises(ServeError, match=words) as info:
            served.decode_upload(data, "x.png", 256, max_pixels=10**6)
        assert info.value.status == 400


def test_the_answer_has_conformal_sets_where_the_run_is_calibrated():
    from vlprompt.calibration import fit_calibration, prediction_sets

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 3.0 * np.eye(5)[labels]
    calibration = fit_calibration(logits, labels)
    model = SimpleNamespace(classnames=list("abcde"), temperature=calibration.temperature,
                            calibration=calibration)  # fmt: skip
    probs = calibration.probabilities(logits[:6])
    answer = served._answer(model, [f"{i}.png" for i in range(6)], list(probs), 2, (0.9, "aps"))
    want = prediction_sets(probs, calibration.threshold(0.9, "aps"))
    assert answer["coverage"] == 0.9 and answer["score"] == "aps"
    for entry, row, mask in zip(answer["predictions"], probs, want):
        assert {m["class"] for m in entry["set"]} == {"abcde"[c] for c in np.flatnonzero(mask)}
        assert [t["class"] for t in entry["top"]] == ["abcde"[c] for c in np.argsort(-row)[:2]]
    with pytest.raises(ServeError, match="no conformal threshold"):
        served._answer(model, ["0.png"], list(probs[:1]), 2, (0.8, "lac"))


def test_upload_names_hosts_limits_and_the_missing_extra(monkeypatch):
    assert served.upload_name("a/b/../c.png", 0) == "c.png"
    assert served.upload_name("x\x00y\n.png", 0) == "xy.png"
    assert served.upload_name("/", 2) == "file-3"
    assert len(served.upload_name("a" * 500, 0)) == served.MAX_NAME_CHARS
    assert served.host_warning("127.0.0.1") is None and served.host_warning("::1") is None
    assert served.host_warning("localhost") is None
    assert "other machines can reach" in served.host_warning("0.0.0.0")
    with pytest.raises(ServeError, match="--max-wait-ms"):
        served.ServeLimits(max_wait_ms=float("nan"))
    assert served.ServeLimits(max_batch=5).max_files == 20
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ServeError, match=r"pip install 'vlprompt\[serve\]'"):
        served.require_packages()


# ---- last: shutdown (the module's server ends here) ---------------------------------------------
def test_coverage_gives_the_runs_own_conformal_sets(trained, server):
    """The served run was calibrated when it was trained: ?coverage=0.9 answers with the same
    sets as `Run.prediction_sets`."""
    import httpx

    image = trained.images[0]
    with open(image, "rb") as f:
        answer = httpx.post(f"{server.url}/predict", params={"coverage": 0.9},
                            files=[("files", (image.name, f.read(), "image/png"))], timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    want = trained.run.prediction_sets([image], coverage=0.9)[0]
    got = answer.json()["predictions"][0]["set"]
    assert [c["class"] for c in got] == [c for c, _ in want]


def test_sigterm_stops_the_server_within_seconds(server):
    server.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    code = server.proc.wait(timeout=15)
    log = server.log.read_text()
    assert code in (0, -signal.SIGTERM), log[-2000:]  # uvicorn re-raises the signal it handled
    assert time.monotonic() - start < 10
    assert "vlprompt: stopped; classified" in log and "Traceback" not in log, log[-2000:]
