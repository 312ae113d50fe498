"""The MLflow UI in a real browser: `mlflow ui` over a store that the project's own tracking code wrote.

Two runs are logged the way the `train` and `evaluate` stages log them (`catdog.tracking.runs`), `mlflow ui` is started
on 127.0.0.1 on a free port, and headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium) must render both runs and their logged metrics. Screenshots go to .pytest_artifacts/ at the repository
root (mlflow_ui.png: the runs table; mlflow_ui_run.png: one run's page), where a CI can pick them up. Each run
logs its data as the stages do (dataset inputs named after data.images, their digest dvc.lock's md5 of
data/prepared), and the runs table must show them.

If Chromium or chromedriver is missing, the set-up installs them with apt-get when it runs as root or with
passwordless sudo, and otherwise skips, naming the packages to install.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import ROOT, free_port, pipeline_env, stop_process_group, wait_for_http

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed: it is in the test extra, run `bash setup.sh`")
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow  # 30-60 s on 2 cores: writing the store and starting the server take 10-20 s each

ARTIFACTS = ROOT / ".pytest_artifacts"
SERVER_DEADLINE = 180  # s for `mlflow ui` to answer; it takes 8-20 s on the 2-core machine
RENDER_DEADLINE = 90   # s for a page to show what is asserted; it takes 2-16 s there
APT_PACKAGES = ("chromium", "chromium-driver")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-extensions", "--no-first-run",
                  "--window-size=1600,1100")

# Run names as DVC names experiments; each run logs what the pipeline logs for a model (a short history).
RUNS = {
    "droll-hound": {"params": {"model": "logistic", "lr": 0.01, "batch_size": 32, "epochs": 3, "seed": 42},
                    "val_accuracy": [0.513, 0.538, 0.529], "test_accuracy": 0.5542,
                    "test": {"test_f1": 0.5121, "test_roc_auc": 0.5873}, "train_seconds": 1.37},
    "tawny-lynx": {"params": {"model": "cnn", "lr": 0.001, "batch_size": 32, "epochs": 3, "seed": 42},
                   "val_accuracy": [0.712, 0.861, 0.934], "test_accuracy": 0.9583,
                   "test": {"test_f1": 0.9576, "test_roc_auc": 0.9912}, "train_seconds": 108.4},
}

IMAGES = "data/synthetic"  # data.images: the datasets' name
DATA_MD5 = "77d47f6a1d727b1ed53d7ba20c459543.dir"  # dvc.lock's md5 of data/prepared, the datasets' digest

# What `dvc exp run` does for each of them, in a process of its own: `train` opens the run through
# catdog.tracking.runs.training_run and logs per-epoch metrics, `evaluate` reopens it (models/run.json) for test_*.
LOG_RUNS = """
import json, os, sys
from catdog.tracking.runs import resumed_run, training_run

for name, run in json.loads(sys.argv[1]).items():
    os.environ["DVC_EXP_NAME"] = name
    with training_run(run["params"]["model"], run["params"], images=sys.argv[2]) as logged:
        for epoch, accuracy in enumerate(run["val_accuracy"], start=1):
            logged.log_metrics({"val_accuracy": accuracy, "train_loss": 1.0 / epoch}, step=epoch)
        logged.log_metrics({"best_val_accuracy": max(run["val_accuracy"]), "train_seconds": run["train_seconds"]})
    with resumed_run(images=sys.argv[2]) as reopened:
        reopened.log_metrics({"test_accuracy": run["test_accuracy"], **run["test"]})
"""


# ---------------------------------------------------------------------------------------------------- Chromium

def _find_chromium():
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _install_chromium() -> None:
    """apt-get install chromium chromium-driver, as root or with passwordless sudo; skip where that cannot be."""
    wanted = " ".join(APT_PACKAGES)
    if not shutil.which("apt-get"):
        pytest.skip(f"Chromium and chromedriver are not installed and there is no apt-get to install them "
                    f"(on Debian or Ubuntu: apt-get install {wanted})")
    if os.geteuid() == 0:
        sudo = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        sudo = ["sudo", "-n"]  # passwordless
    else:
        pytest.skip(f"Chromium and chromedriver are not installed, and installing them needs root or passwordless "
                    f"sudo: run `sudo apt-get install {wanted}`")
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
    print(f"\ninstalling Debian's {wanted} with apt-get (about a minute)...", file=sys.stderr, flush=True)
    started = time.monotonic()
    install = [*apt, "install", "-y", *APT_PACKAGES]
    result = subprocess.run(install, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # a fresh machine has no package lists yet, or stale ones
        subprocess.run([*apt, "update"], capture_output=True, text=True, check=False)
        result = subprocess.run(install, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        pytest.skip(f"`apt-get install {wanted}` failed (no access to a Debian mirror?):\n{tail}")
    print(f"installed in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def chromium():
    """(browser, chromedriver) paths, installed with apt-get first if they are missing."""
    found = _find_chromium()
    if found is None:
        _install_chromium()
        found = _find_chromium()
        if found is None:
            pytest.fail(f"apt-get installed {' '.join(APT_PACKAGES)}, yet {BROWSERS[0]} or chromedriver is not on "
                        f"PATH ({os.environ.get('PATH')})")
    return found


def _start_browser(chromium, tmp_path_factory):
    """Headless Chromium with a new, empty profile (no localStorage, no cookies)."""
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # with the driver's path too, Selenium Manager never goes online
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path, log_output=str(log)))
    except WebDriverException as error:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"headless {binary} did not start through {driver_path}: {error.msg}\n{tail}")
    driver.set_page_load_timeout(RENDER_DEADLINE)
    return driver


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    driver = _start_browser(chromium, tmp_path_factory)
    yield driver
    driver.quit()


@pytest.fixture
def fresh_browser(chromium, tmp_path_factory):
    """A browser of its own, that no test has written state into."""
    driver = _start_browser(chromium, tmp_path_factory)
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------------------------- store and server

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """sqlite:///<tmp>/mlflow.db with mlartifacts/ beside it, as the pipeline lays it out at the repository root."""
    path = tmp_path_factory.mktemp("mlflow_store")
    # data/prepared and the dvc.lock entry DVC would write for it: one file of 4 bytes
    (path / "data/prepared").mkdir(parents=True)
    (path / "data/prepared/manifest.json").write_text("{}\n\n")
    out = {"path": "data/prepared", "hash": "md5", "md5": DATA_MD5, "size": 4, "nfiles": 1}
    (path / "dvc.lock").write_text(json.dumps({"schema": "2.0", "stages": {"prepare": {"outs": [out]}}}))
    env = pipeline_env()  # no inherited MLFLOW_* or DVC_* variables
    env.update(DVC_ROOT=str(path), PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run([sys.executable, "-c", LOG_RUNS, json.dumps(RUNS), IMAGES], cwd=path, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"logging the runs failed:\n{result.stdout}\n{result.stderr}"
    uri = f"sqlite:///{path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("catdog")
    assert experiment is not None, f"no experiment 'catdog' in {uri}"
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    return {"path": path, "uri": uri, "client": client, "experiment": experiment, "runs": runs}


@pytest.fixture(scope="module")
def mlflow_ui(store):
    """The base URL of `mlflow ui` on 127.0.0.1, serving the store; stopped after the module's tests."""
    port = free_port()
    log = store["path"] / "mlflow_ui.log"
    env = pipeline_env()
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner and its 7 huey workers: pages need none
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store["uri"],
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as output:  # a file, not a pipe, so a chatty server never blocks on a full pipe
        server = subprocess.Popen(command, cwd=store["path"], env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(server, f"{base}/health", log, SERVER_DEADLINE)
        yield base
    finally:
        stop_process_group(server)


# ------------------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def screenshots():
    """.pytest_artifacts/, without the screenshots of an earlier session, which would mislead after a failure."""
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("mlflow_ui*.png"):
        old.unlink()
    return ARTIFACTS


def _page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


def _wait_until(driver, condition, what: str, screenshot: Path):
    """Wait until condition(page text) holds; else save a screenshot and fail with the page's text."""
    __tracebackhide__ = True
    try:
        WebDriverWait(driver, RENDER_DEADLINE, poll_frequency=0.5, ignored_exceptions=(WebDriverException,)) \
            .until(lambda d: condition(_page_text(d)))
        return
    except TimeoutException:
        pass
    driver.save_screenshot(str(screenshot))
    pytest.fail(f"after {RENDER_DEADLINE} s the MLflow UI at {driver.current_url} does not show {what}.\n"
                f"Screenshot: {screenshot}\nPage text:\n{_page_text(driver)}")


def _grid_rows(driver) -> list[str]:
    """The text of each row of the runs table; its pinned and scrolled parts are joined by ag-grid's row-index."""
    return list(driver.execute_script("""
        const rows = {};
        for (const part of document.querySelectorAll('[role=row][row-index]')) {
            const index = part.getAttribute('row-index');
            rows[index] = (rows[index] || '') + '\\n' + part.innerText;
        }
        return Object.keys(rows).sort((a, b) => a - b).map(index => rows[index]);  // top row first""") or [])


def _screenshot(driver, path: Path) -> Path:
    """Save a screenshot of the page and check that it is a PNG with something on it."""
    assert driver.save_screenshot(str(path)), f"Chromium did not save {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    assert rgb.width >= 800 and rgb.height >= 600, f"{path} is only {rgb.size}"
    colours = rgb.getcolors(maxcolors=1 << 16)  # None: more colours than that, certainly not blank
    if colours is not None:
        most = max(count for count, _ in colours)
        assert len(colours) > 50 and most < 0.97 * rgb.width * rgb.height, \
            f"{path} looks blank: {len(colours)} colours, the commonest covers {most / rgb.width / rgb.height:.0%}"
    return path


def _seed_ui_state(driver, base: str, experiment_id: str) -> None:
    """What a user would click once (MLflow keeps it in localStorage): show the metric and param columns in the
    runs table, and keep the MLflow Assistant panel, which 3.17 opens on first load, closed."""
    driver.get(f"{base}/health")  # the server's origin, outside the React app, so the app reads the state anew
    columns = {"selectedColumns": ["metrics.`test_accuracy`", "metrics.`val_accuracy`", "params.`model`",
                                   "params.`lr`"]}
    driver.execute_script("""
        localStorage.setItem(arguments[0], arguments[1]);
        localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
        localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');""",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState', json.dumps(columns))


# -------------------------------------------------------------------------------------------------------- tests

def test_the_store_holds_what_the_pipeline_logs(store):
    assert store["experiment"].tags.get("mlflow.experimentKind") == "custom_model_development"
    assert store["experiment"].artifact_location == (store["path"].resolve() / "mlartifacts").as_uri()
    assert sorted(store["runs"]) == sorted(RUNS)
    for name, expected in RUNS.items():
        run = store["runs"][name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["dvc_exp_name"] == name and run.data.tags["model"] == expected["params"]["model"]
        assert run.data.params == {key: str(value) for key, value in expected["params"].items()}
        assert run.data.metrics["test_accuracy"] == expected["test_accuracy"]
        history = store["client"].get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
            list(enumerate(expected["val_accuracy"], start=1))
        assert {(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs} == \
            {(f"{IMAGES}:{split}", DATA_MD5) for split in ("train", "val", "test")}


def test_the_runs_page_shows_both_runs_and_their_test_accuracy(store, mlflow_ui, browser, screenshots):
    experiment_id = store["experiment"].experiment_id
    _seed_ui_state(browser, mlflow_ui, experiment_id)
    # workflowType=machine_learning is the UI's "Model training" switch; without it 3.17.2 shows the runs under
    # its GenAI navigation (it ignores the experiment's kind tag when choosing).
    browser.get(f"{mlflow_ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    screenshot = screenshots / "mlflow_ui.png"
    _wait_until(browser, lambda text: all(name in text for name in RUNS), f"both runs {sorted(RUNS)}", screenshot)

    def each_row_shows_its_value(text):
        rows = _grid_rows(browser)
        return "test_accuracy" in text and all(
            any(name in row and str(run["test_accuracy"]) in row for row in rows) for name, run in RUNS.items())
    _wait_until(browser, each_row_shows_its_value,
                "a test_accuracy column with each run's value (" +
                ", ".join(f"{name}: {run['test_accuracy']}" for name, run in RUNS.items()) + ")", screenshot)
    _screenshot(browser, screenshot)


def test_the_runs_table_shows_each_runs_dataset(store, mlflow_ui, fresh_browser, screenshots):
    """The Dataset column of the runs table, as a new user sees it (MLflow's default columns, in a fresh profile):
    each run's first dataset input, `data/synthetic:train (77d47f6a1d72...`, and `+2` for the others."""
    experiment_id = store["experiment"].experiment_id
    fresh_browser.get(f"{mlflow_ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    screenshot = screenshots / "mlflow_ui_datasets.png"
    shown = f"{IMAGES}:train ({DATA_MD5[:12]}"  # the UI cuts the digest short

    def each_row_shows_its_dataset(text):
        rows = _grid_rows(fresh_browser)
        return "Dataset" in text and all(any(name in row and shown in row for row in rows) for name in RUNS)
    _wait_until(fresh_browser, each_row_shows_its_dataset, f"a Dataset column with {shown} in the row of each "
                f"run {sorted(RUNS)}", screenshot)
    _screenshot(fresh_browser, screenshot)


def test_a_run_page_shows_its_metrics_and_params(store, mlflow_ui, browser, screenshots):
    name, expected = next(iter(RUNS.items()))
    run = store["runs"][name]
    browser.get(f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
                "?workflowType=machine_learning")
    wanted = {"test_accuracy": expected["test_accuracy"], "val_accuracy": expected["val_accuracy"][-1],
              "model": expected["params"]["model"]}
    screenshot = screenshots / "mlflow_ui_run.png"
    patterns = [re.compile(rf"\b{key}\s+{re.escape(str(value))}\b") for key, value in wanted.items()]
    _wait_until(browser, lambda text: name in text and all(p.search(text) for p in patterns),
                f"run {name} with " + ", ".join(f"{key} {value}" for key, value in wanted.items()),
                screenshot)
    _screenshot(browser, screenshot)


def test_catdog_ui_opens_on_the_comparison_in_a_fresh_browser(store, mlflow_ui, fresh_browser, screenshots):
    """No click and no browser storage: the URL `catdog ui` prints asks for the Model training view and the
    comparison the server keeps as an experiment tag; the columns and each run's values are shown, best first."""
    port = mlflow_ui.rsplit(":", 1)[1]
    env = {**pipeline_env(), "DVC_ROOT": str(store["path"]), "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-m", "catdog", "ui", "--print-url", "--port", port], cwd=store["path"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip().split(": ", 1)[1]
    assert url.startswith(f"{mlflow_ui}/#/experiments/{store['experiment'].experiment_id}/runs?")
    assert "workflowType=machine_learning" in url and "viewStateShareKey=catdog-compare" in url
    fresh_browser.get(url)
    screenshot = screenshots / "mlflow_ui_compare.png"
    headers = ["model", "test_accuracy", "best_val_accuracy", "test_f1", "test_roc_auc", "train_seconds"]
    values = {name: [run["params"]["model"], run["test_accuracy"], max(run["val_accuracy"]), run["test"]["test_f1"],
                     run["test"]["test_roc_auc"], run["train_seconds"]] for name, run in RUNS.items()}

    def every_column_and_value_shown(text):
        rows = _grid_rows(fresh_browser)
        return all(h in text for h in headers) and all(
            any(name in row and all(str(v) in row for v in vals) for row in rows) for name, vals in values.items())
    _wait_until(fresh_browser, every_column_and_value_shown,
                f"the columns {headers} with each run's values {values}", screenshot)
    order = [next(name for name in RUNS if name in row) for row in _grid_rows(fresh_browser)]
    best_first = sorted(RUNS, key=lambda name: -RUNS[name]["test_accuracy"])
    assert order == best_first, f"rows in the order {order}, not by test accuracy ({best_first})"
    _screenshot(fresh_browser, screenshot)
