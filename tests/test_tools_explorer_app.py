"""The explorer served by run_scripts/gpa_explorer.py on 127.0.0.1: its API through gradio_client, its page through
headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import free_port, tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data.ground_truth import object_patches
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.head_selection import load_scoring_model, teacher_encoder_of
from modeling_gpa.masking import KEPT, mask_counts
from modeling_gpa.teacher import teacher_scores
from modeling_gpa.tools.explorer_app import build_app, load

gradio_client = pytest.importorskip("gradio_client", reason="the explorer needs the demo extra: pip install '.[demo]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTUP_TIMEOUT_S = 90
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Where the browser test saves the page once it shows the mask (the README's screenshot is taken this way).
SCREENSHOT_ENV = "GPA_EXPLORER_SCREENSHOT"
CHECKPOINT_ENV = "GPA_EXPLORER_CHECKPOINT"


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Polls ``url`` until it answers 200; fails with the server's ``log`` when it exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the explorer exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the explorer did not answer on {url} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPA model and its directory; ``GPA_EXPLORER_CHECKPOINT`` serves another 28x28 checkpoint (49 patches,
    mask ratio 0.75) to the browser test instead, e.g. the quick start's for the README's screenshot."""
    if os.environ.get(CHECKPOINT_ENV):
        return load_scoring_model(os.environ[CHECKPOINT_ENV]), os.environ[CHECKPOINT_ENV]
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_teacher="self", gpa_layer=1, gpa_head=2))).eval()
    directory = tmp_path_factory.mktemp("explorer_checkpoint")
    model.save_pretrained(directory)
    return model, str(directory)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """run_scripts/gpa_explorer.py on a free port of 127.0.0.1, stopped when the module's tests are done."""
    port = free_port()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, os.path.join(ROOT, "run_scripts", "gpa_explorer.py")]
    command += ["--model_name_or_path", checkpoint[1], "--server_port", str(port)]
    # A file, not a pipe: nobody reads a pipe while the tests run, and a full one would stall the server.
    log = tmp_path_factory.mktemp("explorer_server") / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log, STARTUP_TIMEOUT_S)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """An RGB photo-like PNG (a bright disc on a gradient) whose grey version the 1-channel model sees."""
    rows, columns = np.mgrid[0:40, 0:40]
    pixels = np.stack([rows * 5, columns * 5, np.full_like(rows, 60)], axis=-1)
    pixels[(rows - 22) ** 2 + (columns - 18) ** 2 < 100] = 240
    path = tmp_path_factory.mktemp("explorer_images") / "photo.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return str(path)


def read_image(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_the_api_answers_with_the_score_the_mask_counts_and_a_reconstruction_of_the_image_s_shape(
    server, checkpoint, photo
):
    model, _ = checkpoint
    client = gradio_client.Client(server, verbose=False)
    pixel_values = ImageSettings.for_config(model.config).to_pixel_values([Image.open(photo)])
    own = client.predict(
        gradio_client.handle_file(photo), "0", "checkpoint", "logits/all", 0.75, 0.25, None, api_name="/explore"
    )
    heat_map, mask, reconstruction, counts_line, numbers = own
    assert (numbers["block"], numbers["head"]) == (1, 2)
    np.testing.assert_allclose(numbers["gpa"], model.compute_gpa(pixel_values)[0].numpy(), rtol=1e-4, atol=1e-5)
    hard, soft, random = mask_counts(49, 0.75, 0.25)
    assert numbers["counts"] == {"hard": hard, "soft": soft, "random": random}
    assert f"hard {hard}, soft {soft}, random {random} (block 1, head 2)" in counts_line
    # Shown enlarged 8x (28 -> 224 px): every panel has the image's shape.
    assert read_image(reconstruction).shape == read_image(heat_map).shape == read_image(mask).shape == (224, 224, 3)

    photo_file = gradio_client.handle_file(photo)
    numbers = client.predict(photo_file, "2", "all", "softmax/others", 0.5, 1.0, photo_file, api_name="/explore")[4]
    expected = teacher_scores(
        teacher_encoder_of(model), pixel_values, layer=2, head=None, score="softmax", queries="others"
    )
    np.testing.assert_allclose(numbers["gpa"], expected[0].numpy(), rtol=1e-4, atol=1e-5)
    hard, soft, random = mask_counts(49, 0.5, 1.0)
    assert numbers["counts"] == {"hard": hard, "soft": soft, "random": random} and soft == 0
    # The photo as its own object mask: its bright pixels (the disc and the gradient's corner) are the object.
    grey = np.asarray(Image.open(photo).convert("L").resize((28, 28), Image.Resampling.NEAREST)) > 127
    objects = object_patches(torch.from_numpy(grey)[None], 4)[0].numpy()
    hidden = (np.array(numbers["groups"]) != KEPT) & objects
    assert numbers["object_share"] == pytest.approx(hidden.sum() / objects.sum())
    assert numbers["random_object_share"] == pytest.approx(25 / 49)

    # A head the model does not have is refused in one line before anything runs.
    with pytest.raises(gradio_client.exceptions.AppError, match=r"^Value: 9 is not in the list of choices: \['checkp"):
        client.predict(photo_file, "0", "9", "logits/all", 0.75, 0.5, None, api_name="/explore")

    ranking, top = client.predict(
        gradio_client.handle_file(photo), gradio_client.handle_file(photo), "logits/all", 0.75, 1.0, api_name="/rank"
    )
    assert len(top) == 10 and read_image(ranking).shape[2] == 3
    shares = [entry["object_share"] for entry in top]
    assert shares == sorted(shares, reverse=True) and all(0.0 <= share <= 1.0 for share in shares)


@pytest.mark.slow
def test_page_and_backend_in_one_process_as_a_space_runs_them_answer_the_same(server, checkpoint, photo):
    model, directory = checkpoint
    app = build_app(*load(directory))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        inputs = (gradio_client.handle_file(photo), "2", "1", "softmax/cls", 0.6, 0.4, None)
        local = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False).predict(*inputs, api_name="/explore")
        remote = gradio_client.Client(server, verbose=False).predict(*inputs, api_name="/explore")
        assert local[3] == remote[3] and local[4] == remote[4]
        # A ValueError of the backend reaches the client as the page's one-line error, here as across processes.
        for url in (f"http://127.0.0.1:{port}/", server):
            with pytest.raises(gradio_client.exceptions.AppError, match=r"^upload an image and its object mask"):
                gradio_client.Client(url, verbose=False).predict(
                    gradio_client.handle_file(photo), None, "logits/all", 0.75, 1.0, api_name="/rank"
                )
    finally:
        app.close()


@pytest.mark.slow
def test_a_port_in_use_ends_both_processes_with_one_line(checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        command = [sys.executable, os.path.join(ROOT, "run_scripts", "gpa_explorer.py")]
        command += ["--model_name_or_path", checkpoint[1], "--server_port", str(taken.getsockname()[1])]
        environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: Cannot find empty port" in result.stderr


def _shot(driver, element_id: str) -> np.ndarray | None:
    """What the browser shows of the block ``element_id`` (label and image), or None while it is being replaced."""
    from selenium.common.exceptions import WebDriverException

    try:
        png = driver.find_element("css selector", f"#{element_id}").screenshot_as_png
    except WebDriverException:
        return None
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _changed_share(first: np.ndarray, second: np.ndarray) -> float:
    """Share of the pixels whose colour moved by more than 30 of 255 in some channel (1.0 when the sizes differ)."""
    if first.shape != second.shape:
        return 1.0
    return float((np.abs(first.astype(int) - second.astype(int)).max(axis=-1) > 30).mean())


def _settled_shot(driver, element_id: str, differs_from: np.ndarray | None, timeout_s: float, what: str, state):
    """The block's picture once it differs from ``differs_from`` (None: anything) and stays the same for 1 s."""
    deadline = time.monotonic() + timeout_s
    previous, same_since = None, time.monotonic()
    while time.monotonic() < deadline:
        shot = _shot(driver, element_id)
        if shot is None or previous is None or _changed_share(shot, previous) > 0:
            previous, same_since = shot, time.monotonic()
        elif time.monotonic() - same_since >= 1.0 and (
            differs_from is None or _changed_share(shot, differs_from) > 0.02
        ):
            return shot
        time.sleep(0.25)
    pytest.fail(f"the page did not {what} within {timeout_s} s {state()}")


def _wait_for(condition, timeout_s: float, what: str, state=lambda: ""):
    """``condition()`` once it is neither None nor False; fails after ``timeout_s`` with ``state()`` in the message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.25)
    pytest.fail(f"the page did not {what} within {timeout_s} s {state()}")


def _page_state(driver) -> str:
    """The progress the page shows and its counts line, for a failure message."""
    progress = driver.find_element("css selector", "#progress input[type=number]").get_attribute("value")
    return f"(progress {progress}; {driver.find_element('css selector', '#counts').text!r})"


def _image_source(driver, element_id: str) -> str | None:
    """The address of the image shown in ``element_id`` once the browser has loaded it, else None."""
    script = "const image = document.querySelector(arguments[0]); "
    script += "return image && image.complete && image.naturalWidth > 0 ? image.src : null;"
    return driver.execute_script(script, f"#{element_id} img")


def save_page_screenshot(driver, path: str, width: int = 900) -> None:
    """The page down to the counts line as a small PNG (``width`` px wide, 64 colours): the README's picture."""
    page = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    counts = driver.find_element("css selector", "#counts").rect
    scale = page.width / driver.execute_script("return window.innerWidth;")
    page = page.crop((0, 0, page.width, min(page.height, round((counts["y"] + counts["height"] + 16) * scale))))
    page = page.resize((width, round(page.height * width / page.width)), Image.Resampling.LANCZOS)
    page.quantize(colors=64).save(path, optimize=True)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_the_page_takes_an_upload_and_redraws_the_mask_when_the_progress_slider_moves(server, photo):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        driver.get(server)
        state = partial(_page_state, driver)
        _wait_for(lambda: _image_source(driver, "mask"), 30, "show the example's mask", state)
        example = _settled_shot(driver, "mask", None, 30, "settle on the example's mask", state)
        if os.environ.get(SCREENSHOT_ENV):
            save_page_screenshot(driver, os.environ[SCREENSHOT_ENV])

        driver.find_element("css selector", "#image input[type=file]").send_keys(photo)
        before = _settled_shot(driver, "mask", example, 30, "draw the uploaded image's mask", state)
        hard, soft, random = mask_counts(49, 0.75, 0.5)
        assert f"hard {hard}, soft {soft}, random {random}" in driver.find_element("css selector", "#counts").text

        slider = driver.find_element("css selector", "#progress input[type=range]")
        slider.send_keys(*[Keys.ARROW_RIGHT] * 10)  # 0.5 -> 1.0 in steps of 0.05: a quarter hard -> half hard
        hard, soft, random = mask_counts(49, 0.75, 1.0)
        expected = f"hard {hard}, soft {soft}, random {random}"
        _wait_for(lambda: expected in driver.find_element("css selector", "#counts").text, 30, "count again", state)
        after = _settled_shot(driver, "mask", before, 30, "redraw the mask after the slider moved", state)
        assert _changed_share(before, after) > 0.02, "the mask looks the same after the progress moved from 0.5 to 1"
        progress = driver.find_element("css selector", "#progress input[type=number]").get_attribute("value")
        assert float(progress) == 1.0
    finally:
        driver.quit()
