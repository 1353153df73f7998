"""The web app on the demo models: through gradio_client (the API) and in headless Chromium (Debian's chromium
and chromium-driver, driven by Selenium). One server for the module, stopped at its end."""
import json
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from conftest import REPO, SAMPLES

gr = pytest.importorskip("gradio", reason="the app extra is not installed")
from gradio_client import Client, handle_file  # noqa: E402

from interrogator.app.paths import Roots  # noqa: E402
from interrogator.app.service import ANALYZE_TABLES, Service  # noqa: E402
from interrogator.core.config import load_config, replace  # noqa: E402
from interrogator.runner.pipeline import run  # noqa: E402

IMAGES = sorted(SAMPLES.glob("*.png"))
UPLOAD_LIMIT = 2 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_models, small_dicts):
    """The app serving the demo models, an allowed folder with the samples, and an index of them."""
    root = tmp_path_factory.mktemp("app")
    allowed = root / "allowed"
    shutil.copytree(SAMPLES, allowed / "images", ignore=shutil.ignore_patterns("*.csv"))
    dicts = root / "dicts"  # the small lists and the first 300 artists (Analyze and fast mode rank them)
    shutil.copytree(small_dicts, dicts)
    artists = (REPO / "dicts" / "artists.txt").read_text(encoding="utf-8")
    (dicts / "artists.txt").write_text("\n".join(artists.splitlines()[:300]) + "\n", encoding="utf-8")
    config_file = root / "config.json"
    config_file.write_text(json.dumps({
        "blip_path": str(demo_models.blip_path), "clip_model": "demo-tiny-clip", "clip_path": str(demo_models.clip_path),
        "embedding_path": str(demo_models.embedding_path), "dicts": str(dicts), "batch_size": 4,
        "max_new_tokens": 6, "device": "cpu", "num_workers": 0, "label_cache": str(root / "labels")}))
    config = load_config(config_file)
    from interrogator.tools.features import build_index
    build_index(config, str(allowed / "images"), str(root / "index.safetensors"), progress=False)
    service = Service(config, Roots.of(allowed), str(root / "index.safetensors"), UPLOAD_LIMIT, str(root / "work"))
    service.roots = Roots.of(allowed, service.store.root)
    service.start()
    from interrogator.app.ui import launch
    port = free_port()
    page = launch(service, port=port, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "service": service, "config": config, "allowed": allowed,
           "root": root, "page": page}
    page.close()


@pytest.fixture(scope="module")
def client(site):
    return Client(site["url"], verbose=False)


def submit_prompt(config, image: Path, folder: Path) -> str:
    """What ``submit`` writes for this one image and config (a folder of that image, the csv format)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(image, folder)
    run(replace(config, data_path=str(folder), output=str(folder / "s.csv"), formats=["csv"]), progress=False)
    import pandas as pd
    return pd.read_csv(folder / "s.prompts.csv", keep_default_na=False).prompt[0]


def test_the_prompt_is_submits_prompt_and_the_models_load_once(site, client, tmp_path):
    prompt, caption, negative = client.predict(handle_file(str(IMAGES[0])), "seed", False, api_name="/prompt")
    assert prompt == submit_prompt(site["config"], IMAGES[0], tmp_path / "one")
    assert prompt.startswith(caption) and caption and negative == ""
    _, _, negative = client.predict(handle_file(str(IMAGES[0])), "seed", True, api_name="/prompt")
    assert negative
    assert site["service"].loads == 1


def test_two_concurrent_requests_both_succeed(site, client):
    answers = {}

    def ask(i):
        answers[i] = Client(site["url"], verbose=False).predict(handle_file(str(IMAGES[i])), "fast", False,
                                                               api_name="/prompt")[0]
    threads = [threading.Thread(target=ask, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(answers) == {1, 2} and all(answers.values())
    assert site["service"].loads == 1


def test_analyze_gives_k_scored_labels_per_table(client):
    tables = client.predict(handle_file(str(IMAGES[0])), 4, api_name="/analyze")
    assert len(tables) == len(ANALYZE_TABLES)
    for table in tables:
        scores = [c["confidence"] for c in table["confidences"]]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)


def refused(client, *args, api_name):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_paths_outside_the_allowed_folders_are_refused(site, client, tmp_path):
    allowed = site["allowed"]
    outside = tmp_path / "outside"
    shutil.copytree(SAMPLES, outside)
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    for folder in (str(outside), str(allowed / "link"), f"{allowed}/images/../../outside", "/etc"):
        message = refused(client, folder, str(allowed / "o.csv"), ["kaggle"], api_name="/folder")
        assert message.startswith(f"folder: {folder} is outside the allowed folders ("), message
    message = refused(client, str(allowed / "images"), str(outside / "o.csv"), ["kaggle"], api_name="/folder")
    assert message.startswith(f"output: {outside / 'o.csv'} is outside the allowed folders")
    assert not (outside / "o.csv").exists()


def test_an_undecodable_and_an_oversized_upload_get_a_message(site, client, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    message = refused(client, handle_file(str(bad)), "seed", False, api_name="/prompt")
    assert message.startswith("the upload is not an image this tool decodes: cannot decode")
    big = tmp_path / "big.png"
    big.write_bytes(IMAGES[0].read_bytes() + b"\0" * UPLOAD_LIMIT)
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {UPLOAD_LIMIT} bytes"):
        client.predict(handle_file(str(big)), "seed", False, api_name="/prompt")  # the client knows the limit
    import httpx
    with open(big, "rb") as f:  # and the server refuses such an upload from anyone else
        answer = httpx.post(site["url"] + "gradio_api/upload", files={"files": ("big.png", f, "image/png")})
    assert answer.status_code == 413, answer.text
    from interrogator.app.service import InputRefused
    inside = site["allowed"] / "big.png"
    shutil.copy(big, inside)
    with pytest.raises(InputRefused, match=r"^the upload is 2\.4 MiB; the limit is 2 MiB$"):
        site["service"].check_upload(str(inside))  # a file that reached the handler some other way
    inside.unlink()


def test_a_folder_run_writes_submits_csv_and_a_stopped_run_resumes(site, client, tmp_path):
    allowed, config = site["allowed"], site["config"]
    summary, files = client.predict(str(allowed / "images"), str(allowed / "out" / "app.csv"), ["kaggle", "csv"],
                                    api_name="/folder")
    reference = tmp_path / "ref.csv"
    run(replace(config, data_path=str(allowed / "images"), output=str(reference)), progress=False)
    assert (allowed / "out" / "app.csv").read_bytes() == reference.read_bytes()
    assert summary.startswith("images: 7 done") and sorted(Path(f).name for f in files) == ["app.csv",
                                                                                         "app.prompts.csv"]
    service = site["service"]
    from interrogator.runner.pipeline import Stopped
    with pytest.raises(Stopped, match="stopped after 1 of 2 batches"):
        service.run_folder(str(allowed / "images"), str(allowed / "out" / "b.csv"), ["kaggle"], lambda done, of: True)
    assert not (allowed / "out" / "b.csv").exists()
    result = service.run_folder(str(allowed / "images"), str(allowed / "out" / "b.csv"), ["kaggle"])
    assert result.resumed_batches == 1 and (allowed / "out" / "b.csv").read_bytes() == reference.read_bytes()


def test_search_gives_k_hits_with_scores_a_csv_and_a_sheet(client):
    gallery, files = client.predict("a painting", None, 3, api_name="/search")
    assert len(gallery) == 3
    assert sorted(Path(f).name for f in files) == ["hits.csv", "sheet.png"]


# ---- in a real browser --------------------------------------------------------------------------
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(CHROMEDRIVER is None or shutil.which("chromium") is None,
                                   reason="Debian's chromium and chromium-driver are not installed")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service as DriverService
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    """Screenshots of each tab, where INTERROGATOR_SCREENSHOTS names a folder (docs/ for the README)."""
    folder = os.environ.get("INTERROGATOR_SCREENSHOTS")
    if folder:
        driver.save_screenshot(str(Path(folder) / f"app-{name}.png"))


def open_tab(driver, url: str, name: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    wait = WebDriverWait(driver, 120)
    tab = wait.until(EC.element_to_be_clickable((By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']")))
    tab.click()
    return wait


def upload(driver, elem_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def value_of(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea").get_attribute("value")


@needs_browser
def test_in_the_browser_the_prompt_tab_shows_submits_prompt(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    wait = open_tab(browser, site["url"], "Prompt")
    upload(browser, "prompt-image", IMAGES[3])
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-image .file-preview, #prompt-image a"))
    browser.find_element(By.ID, "prompt-run").click()
    wait.until(lambda d: value_of(d, "prompt-out"))
    assert value_of(browser, "prompt-out") == submit_prompt(site["config"], IMAGES[3], tmp_path / "one")
    shot(browser, "prompt")


@needs_browser
def test_in_the_browser_analyze_shows_k_rows_per_table(site, browser):
    from selenium.webdriver.common.by import By
    wait = open_tab(browser, site["url"], "Analyze")
    upload(browser, "analyze-image", IMAGES[0])
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#analyze-image .file-preview, #analyze-image a"))
    browser.find_element(By.ID, "analyze-run").click()

    def rows(d):
        counts = [len(d.find_elements(By.CSS_SELECTOR, f"#analyze-{name} .confidence-set")) for name in ANALYZE_TABLES]
        return counts if all(counts) else None
    assert wait.until(rows) == [5] * len(ANALYZE_TABLES)
    shot(browser, "analyze")


@needs_browser
def test_in_the_browser_a_search_shows_k_thumbnails(site, browser):
    from selenium.webdriver.common.by import By
    wait = open_tab(browser, site["url"], "Search")
    from selenium.webdriver.common.keys import Keys
    browser.find_element(By.CSS_SELECTOR, "#search-text textarea").send_keys("a portrait")
    k = browser.find_element(By.CSS_SELECTOR, "#search-k input[type=number]")
    k.send_keys(Keys.CONTROL, "a")
    k.send_keys("5", Keys.TAB)
    browser.find_element(By.ID, "search-run").click()
    thumbs = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-gallery button img") or None)
    assert len(thumbs) == 5
    shot(browser, "search")


@needs_browser
def test_in_the_browser_a_folder_run_writes_submits_csv(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    allowed = site["allowed"]
    wait = open_tab(browser, site["url"], "Folder")
    browser.find_element(By.CSS_SELECTOR, "#folder-path textarea").send_keys(str(allowed / "images"))
    browser.find_element(By.CSS_SELECTOR, "#folder-output textarea").send_keys(str(allowed / "web" / "w.csv"))
    browser.find_element(By.ID, "folder-run").click()
    wait.until(lambda d: value_of(d, "folder-summary").startswith("images: 7 done"))
    reference = tmp_path / "ref.csv"
    run(replace(site["config"], data_path=str(allowed / "images"), output=str(reference)), progress=False)
    assert (allowed / "web" / "w.csv").read_bytes() == reference.read_bytes()
    shot(browser, "folder")


def test_it_listens_on_this_machine_only_and_shares_nothing(site):
    from interrogator.commands.cli import build_parser
    page = site["page"]
    assert (page.server_name, page.share, page.share_url) == ("127.0.0.1", False, None)
    args = build_parser().parse_args(["app", "--config", "c.json"])
    assert (args.host, args.share, args.max_upload_mb) == ("127.0.0.1", False, 20)


def test_the_command_refuses_bad_input_in_one_line(capsys, site, tmp_path):
    from interrogator.commands.cli import main
    config = site["root"] / "config.json"
    assert main(["app", "--config", str(config), "--allow", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --allow {tmp_path / 'missing'}: not a folder"
    assert main(["app", "--config", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip() == f"error: config file does not exist: {tmp_path / 'none.json'}"


def test_a_bad_or_busy_port_is_one_line_before_any_model_loads(capsys, site, monkeypatch):
    from interrogator.commands.cli import main
    monkeypatch.setattr("interrogator.runner.loading.load_models", lambda *a, **k: pytest.fail("a model loaded"))
    config = site["root"] / "config.json"
    with pytest.raises(SystemExit) as exit_:
        main(["app", "--config", str(config), "--port", "80000"])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip() == \
        "error: app: argument --port: expected a whole number >= 1 and <= 65535, got '80000'"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--config", str(config), "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: --host 127.0.0.1 --port {port}: cannot listen there: Address already in use"


def test_files_are_served_only_from_the_allowed_folders(site, tmp_path):
    import httpx
    allowed = site["allowed"]
    inside = allowed / "images" / IMAGES[0].name
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the web")
    (allowed / "leak").symlink_to(outside)

    def status(path) -> int:
        return httpx.get(f"{site['url']}gradio_api/file={path}").status_code
    assert status(inside) == 200
    climb = f"{allowed}/{os.path.relpath(outside, allowed)}"  # allowed/../../...: `..` out of the folder
    assert ".." in climb and Path(climb).resolve() == outside.resolve()
    for path in (outside, allowed / "leak", climb, "/etc/hostname", Path(__file__).resolve()):
        assert status(path) == 403, path


def test_a_link_out_of_the_allowed_folder_is_never_read(write_config, tmp_path):
    """A symlink inside an allowed folder that points outside it: refused before anything is decoded."""
    from interrogator.app.paths import PathRefused, Roots
    from interrogator.app.service import Service
    from interrogator.core.config import load_config
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    shutil.copytree(SAMPLES, allowed / "images", ignore=shutil.ignore_patterns("*.csv"))
    outside.mkdir()
    shutil.copy(IMAGES[0], outside / "secret.png")
    (allowed / "images" / "zz.png").symlink_to(outside / "secret.png")
    service = Service(load_config(write_config()), Roots.of(allowed))
    with pytest.raises(PathRefused, match=f"folder image: {allowed / 'images' / 'zz.png'} is outside the allowed"):
        service.run_folder(str(allowed / "images"), str(allowed / "out.csv"), ["kaggle", "txt"])
    assert service.loads == 0 and not (allowed / "out.csv").exists()
    assert not list((allowed / "images").glob("*.txt"))


def test_a_call_gradio_itself_refuses_carries_its_one_line(site, client):
    """Gradio refuses these before a handler runs; with show_error off it sent {"error": null} to the client (the
    HTTP API below is gradio_client's own protocol; gradio_client itself uploads every path it is given)."""
    message = refused(client, handle_file(str(IMAGES[0])), "no-such-mode", False, api_name="/prompt")
    assert message.startswith("Value: no-such-mode is not in the list of choices: ") and "\n" not in message
    import httpx
    answers = []
    for data in ([{"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}, "seed", False],
                 ["x", "seed", False], [None, 3]):
        event = httpx.post(site["url"] + "gradio_api/call/prompt", json={"data": data}, timeout=60).json()
        stream = httpx.get(site["url"] + f"gradio_api/call/prompt/{event['event_id']}", timeout=120).text
        answers.append(json.loads(stream.split("data: ", 1)[1].splitlines()[0])["error"])
    assert answers == ["Cannot move /etc/hostname to the gradio cache dir because it was not uploaded by a user.",
                       "FileData: Value error, The 'meta' field must be explicitly provided in the input data and "
                       "be equal to {'_type': 'gradio.FileData'}.",
                       "An event handler (prompt) didn't receive enough input values (needed: 3, got: 2)."]


def test_an_upload_is_read_only_from_the_upload_folder_or_the_allowed_ones(site, tmp_path):
    """Gradio names an upload by its path; the service reads it only where uploads land or the roots allow."""
    from interrogator.app.paths import PathRefused
    outside = tmp_path / "outside.png"
    shutil.copy(IMAGES[0], outside)
    link = site["allowed"] / "outside-link.png"
    link.symlink_to(outside)
    service = site["service"]
    for path in (str(outside), str(link)):
        with pytest.raises(PathRefused) as info:
            service.check_upload(path)
        assert str(info.value).startswith(f"upload: {path} is outside the allowed folders (")
    inside = site["allowed"] / "images" / IMAGES[1].name
    assert service.check_upload(str(inside)) == inside.resolve()


def test_a_refused_request_prints_no_traceback_on_the_server_without_debug(site, client, capfd, tmp_path):
    """A refusal is the user's input: one line to the client, and nothing on the server's console; with --debug
    (the interrogator logger at DEBUG) Gradio prints its traceback there."""
    import logging
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    def console_of_refusals() -> str:
        capfd.readouterr()
        refused(client, handle_file(str(bad)), "seed", False, api_name="/prompt")  # the tool's refusal
        refused(client, handle_file(str(IMAGES[0])), "no-such-mode", False, api_name="/prompt")  # Gradio's own
        out, err = capfd.readouterr()
        return out + err
    quiet = console_of_refusals()
    assert quiet == "", quiet
    interrogator_log = logging.getLogger("interrogator")
    level = interrogator_log.level
    interrogator_log.setLevel(logging.DEBUG)
    try:
        shown = console_of_refusals()
    finally:
        interrogator_log.setLevel(level)
    assert shown.count("Traceback (most recent call last)") == 2 and "the upload is not an image" in shown


# ---- the Dataset tab ----------------------------------------------------------------------------
from helpers import CAPTIONS, make_folder, snapshot  # noqa: E402


def tag_counts(folder: Path) -> dict:
    counted = {}
    for path in folder.glob("*.txt"):
        for tag in {t.strip() for t in path.read_text(encoding="utf-8").split(",") if t.strip()}:
            counted[tag] = counted.get(tag, 0) + 1
    return counted


FILTERS = ("", "", "", "", "all", "", "name", False)  # contains, excludes, tag, without tag, state, rating, sort, desc


def test_dataset_api_a_change_on_disk_between_show_and_save_is_not_written(site, client):
    folder = make_folder(site["allowed"] / "api-set")
    gallery, number, where, _, table, _ = client.predict(str(folder), *FILTERS, api_name="/dataset_open")
    assert (len(gallery), number, where) == (7, 1, "page 1 of 1: 7 images")
    assert {row[0]: row[1] for row in table["data"]} == tag_counts(folder)
    version = site["service"].workspace(str(folder)).entry("a.png").version  # what the page was shown
    (folder / "a.txt").write_bytes(b"changed in an editor\n")
    message = refused(client, str(folder), "a.png", "mine", version, api_name="/dataset_save")
    assert message.startswith("a.png: its caption file was changed on disk since it was shown; nothing was written")
    assert (folder / "a.txt").read_bytes() == b"changed in an editor\n"
    summary, sample = client.predict(str(folder), "add", "sks", "", "start", "the selection", "", "b.png\n\ng.jpg\n",
                                     *FILTERS, api_name="/dataset_preview")
    assert summary == "add 'sks' at the start: 2 of 2 caption files change"
    assert [row[0] for row in sample["data"]] == ["b.png", "g.jpg"]
    message = refused(client, str(folder), "add", "sks", "", "start", "the selection", "", "zzz.png", *FILTERS,
                      api_name="/dataset_preview")
    assert message == f"zzz.png: no such image in {folder}"
    message = refused(client, str(site["root"]), *FILTERS, api_name="/dataset_open")
    assert message.startswith(f"folder: {site['root']} is outside the allowed folders")


def test_dataset_api_undo_holds_after_a_restart(site, client):
    from interrogator.app.service import Service
    folder = make_folder(site["allowed"] / "restart-set")
    original = snapshot(folder)
    client.predict(str(folder), *FILTERS, api_name="/dataset_open")
    summary, _ = client.predict(str(folder), "add", "sks", "", "end", "the current filter", "", "", *FILTERS,
                                   api_name="/dataset_preview")
    assert summary == "add 'sks' at the end: 6 of 6 caption files change"  # e.png's empty caption becomes 'sks'
    client.predict(str(folder), api_name="/dataset_apply")
    assert (folder / "a.txt").read_bytes() == b"1girl, solo, smile, sks\n"
    restarted = Service(site["config"], site["service"].roots, work=str(site["root"] / "work"))
    assert restarted.workspace(str(folder)).undo() == "add 'sks' at the end (6 files)"
    assert snapshot(folder) == original


def test_dataset_api_caption_missing_writes_only_the_missing_files(site, client):
    folder = make_folder(site["allowed"] / "missing-set")
    original = snapshot(folder)
    status = client.predict(str(folder), api_name="/dataset_caption_missing")
    assert status == "captioned 1 of 1 images without a caption file"
    after = snapshot(folder)
    assert {n for n in after if after.get(n) != original.get(n)} == {"f.txt"}
    reference = folder.parent / "missing-ref"
    reference.mkdir()
    shutil.copy(folder / "f.png", reference)
    run(replace(site["config"], data_path=str(reference), output=str(reference / "s.csv"), formats=["txt"]),
        progress=False)
    assert after["f.txt"] == (reference / "f.txt").read_bytes()
    assert client.predict(str(folder), api_name="/dataset_caption_missing") == "every image has a caption file"


def gallery_cards(driver, elem_id: str = "dataset-gallery"):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} button img")


def type_into(driver, selector: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def tag_rows(driver) -> dict:
    """The tag table as shown: {tag: count} (Gradio's Dataframe renders its rows as a virtual list)."""
    from selenium.webdriver.common.by import By
    rows = driver.find_elements(By.CSS_SELECTOR, "#dataset-tags .virtual-row")
    cells = [[c.text for c in r.find_elements(By.CSS_SELECTOR, "[role=gridcell]")] for r in rows]
    return {c[0]: int(c[1]) for c in cells if len(c) == 3 and c[1].isdigit()}


def status_of(driver) -> str:
    return value_of(driver, "dataset-status")


@needs_browser
def test_in_the_browser_open_filter_edit_batch_edit_undo_and_count(site, browser):
    from selenium.webdriver.common.by import By
    folder = make_folder(site["allowed"] / "web-set", sources=IMAGES)
    original = snapshot(folder)
    wait = open_tab(browser, site["url"], "Dataset")
    type_into(browser, "#dataset-folder textarea", str(folder))
    browser.find_element(By.ID, "dataset-open").click()
    wait.until(lambda d: len(gallery_cards(d)) == 7)
    page_text = browser.find_element(By.ID, "dataset-gallery").text
    assert all(f"{n}: {t}" in page_text for n, t in CAPTIONS.items() if t), page_text
    assert wait.until(lambda d: tag_rows(d) or None) == tag_counts(folder)
    shot(browser, "dataset")
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "dataset-counts"))
    shot(browser, "dataset-tags")
    browser.execute_script("window.scrollTo(0, 0)")

    type_into(browser, "#dataset-tag textarea", "solo")  # filter by a tag
    browser.find_element(By.ID, "dataset-show").click()
    wait.until(lambda d: len(gallery_cards(d)) == 3)

    gallery_cards(browser)[0].click()  # a.png: edit one caption and save
    wait.until(lambda d: value_of(d, "dataset-caption") == CAPTIONS["a.png"])
    type_into(browser, "#dataset-caption textarea", "1girl, solo, smile, blue sky")
    wait.until(lambda d: "CLIP tokens" in d.find_element(By.ID, "dataset-tokens").text)
    browser.find_element(By.ID, "dataset-save").click()
    wait.until(lambda d: status_of(d) == "saved a.png")
    assert (folder / "a.txt").read_bytes() == b"1girl, solo, smile, blue sky\n"
    shot(browser, "dataset-edit")

    type_into(browser, "#dataset-edit-text textarea", "solo")  # remove-tag (the default) over the filter
    browser.find_element(By.ID, "dataset-preview").click()
    wait.until(lambda d: value_of(d, "dataset-preview-summary") == "remove the tag 'solo': 3 of 3 caption files change")
    before = snapshot(folder)
    browser.find_element(By.ID, "dataset-apply").click()
    wait.until(lambda d: status_of(d).startswith("wrote 3 caption files"))
    after = snapshot(folder)
    assert {n for n in after if after[n] != before[n]} == {"a.txt", "b.txt", "g.txt"}
    assert all(b"solo" not in after[n] for n in ("a.txt", "b.txt", "g.txt"))

    browser.find_element(By.ID, "dataset-undo").click()  # the batch edit, then the single one
    wait.until(lambda d: status_of(d).startswith("undid: remove the tag 'solo'"))
    assert snapshot(folder) == before
    browser.find_element(By.ID, "dataset-undo").click()
    wait.until(lambda d: status_of(d) == "undid: edit a.png")
    assert snapshot(folder) == original


@needs_browser
def test_in_the_browser_clicking_a_tag_filters_the_gallery(site, browser):
    from selenium.webdriver.common.by import By
    folder = make_folder(site["allowed"] / "click-set")
    wait = open_tab(browser, site["url"], "Dataset")
    type_into(browser, "#dataset-folder textarea", str(folder))
    browser.find_element(By.ID, "dataset-open").click()
    wait.until(lambda d: len(gallery_cards(d)) == 7)
    wait.until(lambda d: tag_rows(d) or None)
    cell = next(c for c in browser.find_elements(By.CSS_SELECTOR, "#dataset-tags .virtual-row [data-col='0']")
                if c.text == "hat")
    cell.click()
    wait.until(lambda d: len(gallery_cards(d)) == 2)
    assert value_of(browser, "dataset-tag") == "hat"
    for index, name in enumerate(("b.png", "g.jpg")):  # both into the selection
        gallery_cards(browser)[index].click()
        wait.until(lambda d: value_of(d, "dataset-name") == name)
        browser.find_element(By.ID, "dataset-select").click()
        wait.until(lambda d: value_of(d, "dataset-selection").endswith(name))
    assert value_of(browser, "dataset-selection") == "b.png\ng.jpg"


@needs_browser
def test_in_the_browser_the_prompt_tab_shows_the_uploaded_image(site, browser):
    from selenium.webdriver.common.by import By
    wait = open_tab(browser, site["url"], "Prompt")
    upload(browser, "prompt-image", IMAGES[2])
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-preview img"))


def test_the_folder_tab_reports_images_done_of_all_and_the_rate(site, tmp_path):
    from interrogator.app.ui import Handlers
    handlers = Handlers(site["service"])
    reports = []

    def progress(fraction, desc):
        reports.append((round(fraction, 4), desc))
    handlers.folder(str(site["allowed"] / "images"), str(site["allowed"] / "rate" / "r.csv"), ["kaggle"], progress)
    assert [r[0] for r in reports] == [round(4 / 7, 4), 1.0]
    assert reports[0][1] == "4 of 7 images"
    assert re.fullmatch(r"7 of 7 images, \d+\.\d images/s", reports[1][1]), reports[1][1]


def test_the_apps_download_folder_goes_when_the_app_ends(tmp_path):
    """The folder of search results the browser fetches is the app process's own: removed when it exits."""
    import subprocess
    import sys
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from interrogator.app.ui import Handlers; "
              "h = Handlers(None); (h.downloads / 'hits.csv').write_text('a'); print(h.downloads)")
    proc = subprocess.run([sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    made = Path(proc.stdout.strip())
    assert made.parent == tmp_path and made.name.startswith("interrogator-app-")
    assert not made.exists() and list(tmp_path.iterdir()) == []
